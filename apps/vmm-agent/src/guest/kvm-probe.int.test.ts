import { chmod, chown, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { kvmGroup } from "./kvm-probe.js";

describe.skipIf(process.getuid?.() !== 0)("kvmGroup (needs root to chown)", () => {
  it("gives unprivileged QEMUs the device's group only when that group may open it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "msb-kvm-"));
    try {
      const device = join(dir, "kvm");
      await writeFile(device, "");
      await chown(device, 0, 4321);
      await chmod(device, 0o660);
      expect(await kvmGroup(device)).toEqual([4321]);
      await chmod(device, 0o666);
      expect(await kvmGroup(device)).toEqual([]); // open to all: no group needed
      await chmod(device, 0o600);
      expect(await kvmGroup(device)).toEqual([]); // root only: the probe will say so
      await chown(device, 0, 0);
      await chmod(device, 0o660);
      expect(await kvmGroup(device)).toEqual([]); // never root's group
      expect(await kvmGroup(join(dir, "missing"))).toEqual([]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
