import { mkdir, mkdtemp, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createVmIdentities, decideQemuUser, prepareFileForVm, vmGids } from "./identity.js";

const range = { uidBase: 1_900_000_000, uidCount: 100 };

describe("decideQemuUser", () => {
  it("keeps the server's user when the vmm-agent is not root", () => {
    expect(decideQemuUser({ privileged: false, volumeOwnerUids: [], ...range })).toEqual({
      kind: "server",
    });
  });

  it("gives a VM without volumes, or with root-owned volumes, a uid of its own", () => {
    expect(decideQemuUser({ privileged: true, volumeOwnerUids: [], ...range }).kind).toBe(
      "dedicated",
    );
    expect(decideQemuUser({ privileged: true, volumeOwnerUids: [0], ...range }).kind).toBe(
      "dedicated",
    );
  });

  it("runs as the owner of the volumes when one non-root user owns them all", () => {
    expect(decideQemuUser({ privileged: true, volumeOwnerUids: [1000, 1000], ...range })).toEqual({
      kind: "volume-owner",
      uid: 1000,
    });
  });

  it("falls back to a dedicated uid for mixed owners or owners inside the VM range", () => {
    expect(decideQemuUser({ privileged: true, volumeOwnerUids: [1000, 0], ...range }).kind).toBe(
      "dedicated",
    );
    expect(decideQemuUser({ privileged: true, volumeOwnerUids: [1000, 1001], ...range }).kind).toBe(
      "dedicated",
    );
    expect(
      decideQemuUser({ privileged: true, volumeOwnerUids: [1_900_000_005], ...range }).kind,
    ).toBe("dedicated");
  });
});

describe("VM identities", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "msb-identity-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("says QEMU runs as the server's user and changes nothing when not root", async () => {
    const ids = createVmIdentities({ privileged: false, ...range, gidBase: 1_900_000_000 });
    expect(ids.qemuUser).toBe("qemu runs as the server's user");
    const vm = join(dir, "vm");
    await mkdir(vm, { mode: 0o755 });
    const identity = await ids.assign("a", {
      network: "public",
      dir: vm,
      ownFiles: [],
      volumes: [],
    });
    expect(identity).toEqual({ vmId: "a", kind: "server" });
    expect((await stat(vm)).mode & 0o777).toBe(0o755);
  });

  it("refuses to prepare a symlink planted where a VM file should be", async () => {
    const target = join(dir, "host-file");
    await writeFile(target, "x", { mode: 0o644 });
    await symlink(target, join(dir, "scratch.ext4"));
    const identity = {
      vmId: "a",
      kind: "dedicated" as const,
      credentials: { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0, groups: [] },
    };
    await expect(
      prepareFileForVm(join(dir, "scratch.ext4"), identity, "own", vmGids(1_900_000_000)),
    ).rejects.toMatchObject({ code: "VM_BOOT_FAILED" });
    expect((await stat(target)).mode & 0o777).toBe(0o644);
  });

  it("makes a template's RAM file writable by every VM and its scratch disk by none", async () => {
    // Own uid and gid stand in for the VM's and the shared gid: no root needed to chown.
    const me = { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
    const identity = {
      vmId: "template:k",
      kind: "dedicated" as const,
      credentials: { ...me, groups: [] },
    };
    const gids = { shared: me.gid, publicNet: me.gid, anyNet: me.gid };
    const ram = join(dir, "k.mem");
    const disk = join(dir, "scratch.ext4");
    await writeFile(ram, "", { mode: 0o600 });
    await writeFile(disk, "", { mode: 0o644 });
    await prepareFileForVm(ram, identity, "shared-rw", gids);
    await prepareFileForVm(disk, identity, "private", gids);
    const [r, d] = [await stat(ram), await stat(disk)];
    expect([r.gid, r.mode & 0o777]).toEqual([gids.shared, 0o660]);
    expect(d.mode & 0o777).toBe(0o600);
  });

  it("has nothing to hand over for a QEMU that runs as the server's user", async () => {
    const ids = createVmIdentities({ privileged: false, ...range, gidBase: 1_900_000_000 });
    await ids.assign("pool:k/1", { network: "any", dir, ownFiles: [], volumes: [] });
    expect(await ids.rename("pool:k/1", "ns/a")).toBe(false);
  });

  it("gives the public, none and any networks their gids", () => {
    expect(vmGids(500)).toEqual({ shared: 500, publicNet: 501, anyNet: 502 });
  });
});
