import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { loadOrCreateServerSecret } from "./index.js";

describe("loadOrCreateServerSecret", () => {
  let home: string;
  beforeEach(async () => {
    home = await mkdtemp(join(tmpdir(), "msb-keys-"));
  });
  afterEach(async () => {
    await rm(home, { recursive: true, force: true });
  });

  it("creates a 0600 secret of 32 random bytes once and returns it ever after", async () => {
    const first = await loadOrCreateServerSecret(join(home, "nested"));
    expect(first).toMatch(/^[0-9a-f]{64}$/);
    const path = join(home, "nested", "server.key");
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(await loadOrCreateServerSecret(join(home, "nested"))).toBe(first);
    expect((await readFile(path, "utf8")).trim()).toBe(first);
  });

  it("agrees on one secret when many callers race to create it", async () => {
    const secrets = await Promise.all(
      Array.from({ length: 8 }, () => loadOrCreateServerSecret(home)),
    );
    expect(new Set(secrets).size).toBe(1);
  });

  it("refuses a corrupt secret file instead of replacing it", async () => {
    await writeFile(join(home, "server.key"), "not hex\n");
    await expect(loadOrCreateServerSecret(home)).rejects.toMatchObject({
      code: "CONFIG_INVALID",
    });
    expect(await readFile(join(home, "server.key"), "utf8")).toBe("not hex\n");
  });
});
