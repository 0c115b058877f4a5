import { execFile } from "node:child_process";
import {
  chown,
  lstat,
  mkdir,
  mkdtemp,
  rename,
  rm,
  stat,
  symlink,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { openVolume } from "../volumes/held-volume.js";
import type { VolumePolicy } from "../volumes/volume-policy.js";
import { createVmIdentities } from "./identity.js";

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;
const options = { privileged: true, uidBase: 1_900_400_000, uidCount: 10, gidBase: 1_900_400_000 };

// Real chown and setfacl on a real filesystem: only root can give files to other uids.
describe.skipIf(!isRoot)("VM identities as root (needs root and the acl package)", () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "msb-identity-int-"));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  /** Volumes may come from the test's directory, never from its MSB_HOME. */
  const policy = (): VolumePolicy => ({ roots: [root], denied: [join(root, "home")] });

  async function setup() {
    const vmDir = join(root, "home", "sandboxes", "ns", "a");
    const volume = join(root, "volume");
    await mkdir(vmDir, { recursive: true, mode: 0o700 });
    await mkdir(volume);
    const disk = join(vmDir, "scratch.ext4");
    await writeFile(disk, "disk");
    return { vmDir, volume, disk };
  }

  it("gives a VM its directory and disk and exactly its volume, and takes the volume back", async () => {
    const { vmDir, volume, disk } = await setup();
    const ids = createVmIdentities({ ...options, grantsDir: join(root, "grants") });
    const identity = await ids.assign("ns/a", {
      network: "any",
      dir: vmDir,
      ownFiles: [disk],
      volumes: [await openVolume(volume, false, policy())],
    });
    expect(identity.kind).toBe("dedicated");
    expect(identity.credentials).toEqual({
      uid: 1_900_400_000,
      gid: 1_900_400_002,
      groups: [1_900_400_000],
    });
    expect((await stat(vmDir)).uid).toBe(1_900_400_000);
    expect((await stat(disk)).mode & 0o777).toBe(0o600);
    // The directories above the VM's can be searched by its uid alone, and nothing more.
    expect((await run("getfacl", ["-cp", root])).stdout).toContain("user:1900400000:--x");
    expect((await run("getfacl", ["-cp", volume])).stdout).toContain("user:1900400000:rwx");
    // A file the VM's uid made in the volume goes to the volume's owner at release.
    await writeFile(join(volume, "made-by-vm"), "x");
    await chown(join(volume, "made-by-vm"), 1_900_400_000, 1_900_400_002);
    await ids.release("ns/a");
    expect((await run("getfacl", ["-cp", volume])).stdout).not.toContain("user:1900400000");
    expect((await lstat(join(volume, "made-by-vm"))).uid).toBe(0);
  });

  it("grants the volume directory that was checked, never what its path names later", async () => {
    // The attack: a volume is checked, then its path is swapped for a symlink to a directory
    // outside the roots before the grant; the grant must land on the checked directory.
    const { vmDir, volume, disk } = await setup();
    const outside = join(root, "outside");
    await mkdir(outside);
    const checked = await openVolume(volume, false, policy());
    await rename(volume, join(root, "moved"));
    await symlink(outside, volume);
    const ids = createVmIdentities(options);
    await ids.assign("ns/a", {
      network: "public",
      dir: vmDir,
      ownFiles: [disk],
      volumes: [checked],
    });
    expect((await run("getfacl", ["-cp", outside])).stdout).not.toContain("user:1900400000");
    expect((await run("getfacl", ["-cp", join(root, "moved")])).stdout).toContain(
      "user:1900400000:rwx",
    );
    await ids.release("ns/a");
  });

  /** What opening `path` for reading as `creds` gives: "opened" or the error. */
  async function openAs(
    creds: { uid: number; gid: number; groups: readonly number[] } | undefined,
    path: string,
  ): Promise<string> {
    const asVm = [
      `--reuid=${creds!.uid}`,
      `--regid=${creds!.gid}`,
      `--groups=${creds!.groups.join(",")}`,
    ];
    return run("setpriv", [...asVm, "--", "sh", "-c", `exec 3<"$1"`, "sh", path]).then(
      () => "opened",
      (err: { stderr?: string }) =>
        (err.stderr ?? "").includes("Permission denied") ? "denied" : (err.stderr ?? "?"),
    );
  }

  it("gives a stopped VM's directory and disk to root: the next VM with its uid opens none", async () => {
    const { vmDir, disk } = await setup();
    const ids = createVmIdentities({ ...options, vmRoots: [join(root, "home")] });
    const a = await ids.assign("ns/a", {
      network: "public",
      dir: vmDir,
      ownFiles: [disk],
      volumes: [],
    });
    // What A's QEMU made in its directory, under its uid.
    const made = join(vmDir, "console.log");
    await writeFile(made, "A's console", { mode: 0o600 });
    await chown(made, a.credentials!.uid, a.credentials!.gid);
    await ids.release("ns/a");
    const otherDir = join(root, "home", "sandboxes", "other", "b");
    await mkdir(otherDir, { recursive: true, mode: 0o700 });
    const b = await ids.assign("other/b", {
      network: "public",
      dir: otherDir,
      ownFiles: [],
      volumes: [],
    });
    expect(b.credentials?.uid).toBe(a.credentials?.uid);
    for (const path of [disk, made, vmDir]) {
      expect({ path, as: await openAs(b.credentials, path) }).toEqual({ path, as: "denied" });
      const st = await stat(path);
      expect({ path, uid: st.uid, other: st.mode & 0o077 }).toEqual({ path, uid: 0, other: 0 });
    }
    expect(await openAs(b.credentials, otherDir)).toBe("opened");
    await ids.release("other/b");
  });

  it("takes a uid's files back before handing it out again after a vmm-agent died", async () => {
    const { vmDir, disk } = await setup();
    const crashed = createVmIdentities({ ...options, vmRoots: [join(root, "home")] });
    const a = await crashed.assign("ns/a", {
      network: "public",
      dir: vmDir,
      ownFiles: [disk],
      volumes: [],
    });
    // No release: the process died. The next one hands the same uid to another VM.
    const next = createVmIdentities({ ...options, vmRoots: [join(root, "home")] });
    const otherDir = join(root, "home", "sandboxes", "other", "b");
    await mkdir(otherDir, { recursive: true, mode: 0o700 });
    const b = await next.assign("other/b", {
      network: "public",
      dir: otherDir,
      ownFiles: [],
      volumes: [],
    });
    expect(b.credentials?.uid).toBe(a.credentials?.uid);
    expect(await openAs(b.credentials, disk)).toBe("denied");
    await next.release("other/b");
  });

  it("lets a VM's uid reach nothing under MSB_HOME but its own directory", async () => {
    // A home as a fresh server leaves it (umask 022): database, WAL, image blobs, sockets.
    const home = join(root, "home");
    const { vmDir, disk } = await setup();
    await mkdir(join(home, "images", "blobs"), { recursive: true, mode: 0o755 });
    await mkdir(join(home, "run"), { recursive: true, mode: 0o755 });
    const secrets = [
      join(home, "msb.db"),
      join(home, "msb.db-wal"),
      join(home, "images", "blobs", "sha256-x"),
      join(home, "images", "blobs"),
      join(home, "run"),
    ];
    for (const file of secrets.slice(0, 3)) await writeFile(file, "secret", { mode: 0o644 });
    const other = join(home, "sandboxes", "other", "b");
    await mkdir(other, { recursive: true, mode: 0o700 });
    const ids = createVmIdentities({ ...options, vmRoots: [home], home });
    const a = await ids.assign("ns/a", {
      network: "public",
      dir: vmDir,
      ownFiles: [disk],
      volumes: [],
    });
    const b = await ids.assign("other/b", {
      network: "public",
      dir: other,
      ownFiles: [],
      volumes: [],
    });
    for (const path of [...secrets, join(other)]) {
      expect({ path, as: await openAs(a.credentials, path) }).toEqual({ path, as: "denied" });
    }
    expect(await openAs(a.credentials, disk)).toBe("opened");
    expect(await openAs(b.credentials, other)).toBe("opened");
    // The way in is the VM's own and goes with it.
    await ids.release("ns/a");
    expect((await run("getfacl", ["-cp", home])).stdout).not.toContain(
      `user:${a.credentials!.uid}`,
    );
    expect((await run("getfacl", ["-cp", home])).stdout).toContain(
      `user:${b.credentials!.uid}:--x`,
    );
    await ids.release("other/b");
  });

  it("undoes at the next start the grants of a vmm-agent that died with VMs running", async () => {
    const { vmDir, volume, disk } = await setup();
    const grantsDir = join(root, "grants");
    const crashed = createVmIdentities({ ...options, grantsDir });
    await crashed.assign("ns/a", {
      network: "public",
      dir: vmDir,
      ownFiles: [disk],
      volumes: [await openVolume(volume, true, policy())],
    });
    expect((await run("getfacl", ["-cp", volume])).stdout).toContain("user:1900400000:r-x");
    // No release: the process "died". The next one finds the record.
    const next = createVmIdentities({ ...options, grantsDir });
    expect(await next.reapGrants()).toEqual([volume]);
    expect((await run("getfacl", ["-cp", volume])).stdout).not.toContain("user:1900400000");
    expect(await next.reapGrants()).toEqual([]);
  });

  it("makes a shared file (a template's RAM) readable, not writable, by every VM's QEMU", async () => {
    const { vmDir, disk } = await setup();
    const templateDir = join(root, "shm", "templates", "k1");
    await mkdir(templateDir, { recursive: true, mode: 0o700 });
    const ram = join(templateDir, "ram");
    await writeFile(ram, "guest memory", { mode: 0o600 });
    // Written by the VM that built the template, under its own uid.
    await chown(ram, 1_900_400_009, 1_900_400_001);
    const ids = createVmIdentities(options);
    const identity = await ids.assign("ns/a", {
      network: "public",
      dir: vmDir,
      ownFiles: [disk],
      volumes: [],
    });
    await ids.prepareFile(ram, identity, "shared-read");
    const st = await stat(ram);
    expect([st.uid, st.gid, st.mode & 0o777]).toEqual([0, 1_900_400_000, 0o640]);
    // Another VM's QEMU credentials (any uid of the range, shared supplementary gid).
    const asVm = ["--reuid=1900400007", "--regid=1900400001", "--groups=1900400000", "--"];
    const read = await run("setpriv", [...asVm, "cat", ram]);
    expect(read.stdout).toBe("guest memory");
    const write = await run("setpriv", [...asVm, "sh", "-c", `echo x >> ${ram}`]).then(
      () => "written",
      (err: { stderr?: string }) => err.stderr ?? "",
    );
    expect(write).toContain("Permission denied");
    // Without the shared gid (not a VM) the file stays closed.
    const stranger = await run("setpriv", [
      "--reuid=1900400008",
      "--regid=1900400008",
      "--clear-groups",
      "--",
      "cat",
      ram,
    ]).then(
      () => "read",
      (err: { stderr?: string }) => err.stderr ?? "",
    );
    expect(stranger).toContain("Permission denied");
    await ids.release("ns/a");
  });

  it("lets every VM's QEMU open a template's RAM read-write, and nobody else", async () => {
    const { vmDir, disk } = await setup();
    const memoryDir = join(root, "shm", "msb-x");
    await mkdir(memoryDir, { recursive: true, mode: 0o700 });
    const ram = join(memoryDir, "k1.mem");
    await writeFile(ram, "guest memory", { mode: 0o600 });
    const ids = createVmIdentities(options);
    const builder = await ids.assign("template:k1", {
      network: "public",
      dir: vmDir,
      ownFiles: [disk],
      volumes: [],
    });
    await ids.prepareFile(ram, builder, "own");
    expect((await stat(ram)).uid).toBe(1_900_400_000);
    await ids.prepareFile(ram, builder, "shared-rw");
    await ids.prepareFile(disk, builder, "private");
    await ids.release("template:k1");
    const st = await stat(ram);
    expect([st.uid, st.gid, st.mode & 0o777]).toEqual([0, 1_900_400_000, 0o660]);
    // QEMU 7.2 opens a private memory-backend-file O_RDWR: a clone's QEMU must be able to.
    const asVm = ["--reuid=1900400007", "--regid=1900400002", "--groups=1900400000", "--"];
    const opened = await run("setpriv", [...asVm, "sh", "-c", `exec 3<>${ram} && echo ok`]);
    expect(opened.stdout.trim()).toBe("ok");
    // The builder's uid, handed to a later VM, no longer reaches the template's disk.
    const asBuilderUid = ["--reuid=1900400000", "--regid=1900400001", "--groups=1900400000"];
    const disk2 = await run("setpriv", [...asBuilderUid, "--", "cat", disk]).then(
      () => "read",
      (err: { stderr?: string }) => err.stderr ?? "",
    );
    expect(disk2).toContain("Permission denied");
    const stranger = await run("setpriv", [
      "--reuid=1900400008",
      "--regid=1900400008",
      "--clear-groups",
      "--",
      "sh",
      "-c",
      `exec 3<>${ram}`,
    ]).then(
      () => "opened",
      (err: { stderr?: string }) => err.stderr ?? "",
    );
    expect(stranger).toContain("Permission denied");
  });

  it("hands a pooled VM's uid and grants to the sandbox that claims it", async () => {
    const { vmDir, volume, disk } = await setup();
    const grantsDir = join(root, "grants");
    const ids = createVmIdentities({ ...options, grantsDir });
    const pooled = await ids.assign("pool:k1/p1", {
      network: "any",
      dir: vmDir,
      ownFiles: [disk],
      volumes: [await openVolume(volume, true, policy())],
    });
    expect(await ids.rename("pool:k1/p1", "ns/a")).toBe(true);
    // The uid stays taken: the next VM gets another one.
    const other = await ids.assign("ns/b", {
      network: "any",
      dir: vmDir,
      ownFiles: [],
      volumes: [],
    });
    expect(other.credentials?.uid).not.toBe(pooled.credentials?.uid);
    await ids.release("ns/b");
    // Releasing the old id does nothing; releasing the new one undoes the grant.
    await ids.release("pool:k1/p1");
    expect((await run("getfacl", ["-cp", volume])).stdout).toContain("user:1900400000:r-x");
    // A crash now leaves the grant recorded under the new id only.
    const next = createVmIdentities({ ...options, grantsDir });
    expect(await next.reapGrants()).toEqual([volume]);
    await ids.release("ns/a");
    expect((await run("getfacl", ["-cp", volume])).stdout).not.toContain("user:1900400000");
  });

  it("grants search again on a directory deleted and made again (a rebuilt template's)", async () => {
    const ids = createVmIdentities(options);
    const templateDir = join(root, "home", "templates", "k1");
    const vmDir = join(templateDir, "vm");
    const build = async (vmId: string): Promise<void> => {
      await mkdir(vmDir, { recursive: true, mode: 0o700 });
      await ids.assign(vmId, { network: "public", dir: vmDir, ownFiles: [], volumes: [] });
      expect((await run("getfacl", ["-cp", templateDir])).stdout).toContain("user:1900400000:--x");
      await ids.release(vmId);
    };
    await build("template:k1");
    await rm(templateDir, { recursive: true });
    await build("template:k1");
  });
});
