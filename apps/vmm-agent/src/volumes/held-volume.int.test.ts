import { mkdir, mkdtemp, rename, rm, symlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MsbError } from "@msb/errors";
import { openVolume } from "./held-volume.js";
import type { VolumePolicy } from "./volume-policy.js";

// Real directories and symlinks: what the vmm-agent holds is what passed the policy.
describe("openVolume", () => {
  let root: string;
  let policy: VolumePolicy;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "msb-volume-int-"));
    await mkdir(join(root, "allowed", "vol"), { recursive: true });
    await mkdir(join(root, "outside"));
    await mkdir(join(root, "allowed", "home", "sandboxes"), { recursive: true });
    policy = { roots: [join(root, "allowed")], denied: [join(root, "allowed", "home")] };
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  async function code(p: Promise<unknown>): Promise<string> {
    return p.then(
      () => "opened",
      (err: unknown) => (err instanceof MsbError ? err.code : String(err)),
    );
  }

  it("holds an allowed directory and names it by its inode", async () => {
    const held = await openVolume(join(root, "allowed", "vol"), false, policy);
    try {
      expect(held.realPath).toBe(join(root, "allowed", "vol"));
      // The path goes away; the held descriptor still names the same directory.
      await rename(join(root, "allowed", "vol"), join(root, "allowed", "moved"));
      await symlink(join(root, "outside"), join(root, "allowed", "vol"));
      await held.verify();
    } finally {
      await held.close();
    }
  });

  it("refuses a symlink to a directory outside the roots", async () => {
    await symlink(join(root, "outside"), join(root, "allowed", "link"));
    expect(await code(openVolume(join(root, "allowed", "link"), false, policy))).toBe(
      "POLICY_DENIED",
    );
  });

  it("refuses MSB_HOME, what is inside it and what contains it", async () => {
    expect(await code(openVolume(join(root, "allowed", "home"), false, policy))).toBe(
      "POLICY_DENIED",
    );
    expect(await code(openVolume(join(root, "allowed", "home", "sandboxes"), false, policy))).toBe(
      "POLICY_DENIED",
    );
    expect(await code(openVolume(join(root, "allowed"), false, policy))).toBe("POLICY_DENIED");
  });

  it("allows nothing when no roots are configured", async () => {
    expect(
      await code(openVolume(join(root, "allowed", "vol"), false, { roots: [], denied: [] })),
    ).toBe("POLICY_DENIED");
  });

  it("answers INVALID_PARAMS for a path that does not exist", async () => {
    expect(await code(openVolume(join(root, "allowed", "nope"), false, policy))).toBe(
      "INVALID_PARAMS",
    );
  });
});
