import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { isQemuOfVm, reapLeftovers } from "./leftovers.js";
import type { ProcessTable } from "./process-table.js";

const run = promisify(execFile);

/** A fake process table: pid → argv; kill removes the process. */
function fakeProcesses(table: Map<number, string[]>): ProcessTable & { killed: number[] } {
  const killed: number[] = [];
  return {
    killed,
    cmdline: (pid) => Promise.resolve(table.get(pid)),
    kill(pid) {
      killed.push(pid);
      table.delete(pid);
    },
  };
}

describe("reapLeftovers", () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "msb-leftovers-"));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  async function vm(id: string, files: Record<string, string>): Promise<string> {
    const dir = join(root, ...id.split("/"));
    await mkdir(dir, { recursive: true });
    for (const [name, content] of Object.entries(files)) await writeFile(join(dir, name), content);
    return dir;
  }

  it("kills the QEMU a pidfile names and removes sockets, pidfile and temp files", async () => {
    const dir = await vm("default/a", {
      "qemu.pid": "4242\n",
      "agent.sock": "",
      "qmp.sock": "",
      "qemu.pid.tmp-1234": "",
      "scratch.ext4": "disk",
      "console.log": "log",
    });
    const table = new Map([
      [4242, ["/usr/bin/qemu-system-x86_64", "-qmp", `unix:${dir}/qmp.sock,server=on`]],
    ]);
    const processes = fakeProcesses(table);
    const found = await reapLeftovers({ sandboxesDir: root, processes });
    expect(processes.killed).toEqual([4242]);
    expect(found).toEqual([
      expect.objectContaining({ vmId: "default/a", pid: 4242, killed: true }),
    ]);
    // The sandbox's state stays; everything that belonged to the process is gone.
    expect((await readdir(dir)).sort()).toEqual(["console.log", "scratch.ext4"]);
  });

  it("never kills a recycled pid that belongs to another program or another VM", async () => {
    await vm("default/a", { "qemu.pid": "100" });
    await vm("default/b", { "qemu.pid": "200" });
    const other = join(root, "default", "c");
    const table = new Map([
      [100, ["/usr/bin/python3", "server.py"]],
      [200, ["/usr/bin/qemu-system-x86_64", "-qmp", `unix:${other}/qmp.sock`]],
    ]);
    const processes = fakeProcesses(table);
    const found = await reapLeftovers({ sandboxesDir: root, processes });
    expect(processes.killed).toEqual([]);
    expect(found.map((f) => [f.vmId, f.killed])).toEqual([
      ["default/a", false],
      ["default/b", false],
    ]);
    expect(table.size).toBe(2);
  });

  it("cleans a pidfile whose process is gone and leaves stopped sandboxes alone", async () => {
    await vm("ns/gone", { "qemu.pid": "77", "agent.sock": "" });
    const stopped = await vm("ns/stopped", { "scratch.ext4": "disk" });
    const found = await reapLeftovers({ sandboxesDir: root, processes: fakeProcesses(new Map()) });
    expect(found).toEqual([
      expect.objectContaining({
        vmId: "ns/gone",
        killed: false,
        removed: ["agent.sock", "qemu.pid"],
      }),
    ]);
    expect(await readdir(stopped)).toEqual(["scratch.ext4"]);
  });

  it("is not hung or misled by a FIFO or a symlink planted as the pidfile", async () => {
    const fifoDir = await vm("ns/fifo", { "agent.sock": "" });
    await run("mkfifo", [join(fifoDir, "qemu.pid")]);
    const linkDir = await vm("ns/link", { "pid-elsewhere": "4242\n" });
    await symlink(join(linkDir, "pid-elsewhere"), join(linkDir, "qemu.pid"));
    const table = new Map([
      [4242, ["/usr/bin/qemu-system-x86_64", "-qmp", `unix:${linkDir}/qmp.sock`]],
    ]);
    const processes = fakeProcesses(table);
    const found = await reapLeftovers({ sandboxesDir: root, processes });
    expect(processes.killed).toEqual([]);
    expect(found.map((f) => [f.vmId, f.pid, f.killed])).toEqual([
      ["ns/fifo", undefined, false],
      ["ns/link", undefined, false],
    ]);
  });

  it("finds nothing in a state dir that does not exist yet", async () => {
    const found = await reapLeftovers({
      sandboxesDir: join(root, "missing"),
      processes: fakeProcesses(new Map()),
    });
    expect(found).toEqual([]);
  });
});

describe("isQemuOfVm", () => {
  it("requires a qemu-system binary and an argument inside the VM's directory", () => {
    expect(isQemuOfVm(["qemu-system-x86_64", "-qmp", "unix:/s/a/qmp.sock"], "/s/a")).toBe(true);
    expect(isQemuOfVm(["qemu-system-x86_64", "-qmp", "unix:/s/ab/qmp.sock"], "/s/a")).toBe(false);
    expect(isQemuOfVm(["/bin/sh", "/s/a/qmp.sock"], "/s/a")).toBe(false);
    expect(isQemuOfVm([], "/s/a")).toBe(false);
  });
});
