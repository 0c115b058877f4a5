import { execFile } from "node:child_process";
import { chown, lstat, mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
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
      volumes: [{ realPath: volume, readOnly: false }],
    });
    expect(identity.kind).toBe("dedicated");
    expect(identity.credentials).toEqual({
      uid: 1_900_400_000,
      gid: 1_900_400_002,
      groups: [1_900_400_000],
    });
    expect((await stat(vmDir)).uid).toBe(1_900_400_000);
    expect((await stat(disk)).mode & 0o777).toBe(0o600);
    // The directories above the VM's can be searched by the shared gid, and nothing more.
    expect((await run("getfacl", ["-cp", root])).stdout).toContain("group:1900400000:--x");
    expect((await run("getfacl", ["-cp", volume])).stdout).toContain("user:1900400000:rwx");
    // A file the VM's uid made in the volume goes to the volume's owner at release.
    await writeFile(join(volume, "made-by-vm"), "x");
    await chown(join(volume, "made-by-vm"), 1_900_400_000, 1_900_400_002);
    await ids.release("ns/a");
    expect((await run("getfacl", ["-cp", volume])).stdout).not.toContain("user:1900400000");
    expect((await lstat(join(volume, "made-by-vm"))).uid).toBe(0);
  });

  it("undoes at the next start the grants of a vmm-agent that died with VMs running", async () => {
    const { vmDir, volume, disk } = await setup();
    const grantsDir = join(root, "grants");
    const crashed = createVmIdentities({ ...options, grantsDir });
    await crashed.assign("ns/a", {
      network: "public",
      dir: vmDir,
      ownFiles: [disk],
      volumes: [{ realPath: volume, readOnly: true }],
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
});
