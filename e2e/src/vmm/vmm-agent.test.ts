import { spawn } from "node:child_process";
import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  NetworkMode,
  RunStatus,
  VmState,
  type CreateVmResponse,
  type GetHostInfoResponse,
  type GetVmMetricsResponse,
  type ListVmsResponse,
  type ReadFileResponse,
  type StopVmResponse,
} from "@msb/proto";
import {
  createVm as createTestVm,
  eventually,
  exec,
  guestEnv,
  prepare,
  qemuPidsMentioning,
  rejection,
  runCode,
  startVmmAgent,
  stopAndCheckClean,
  unary,
  type GuestArtifacts,
  type VmmAgentProcess,
} from "./harness.js";

// Real VMs under whatever accelerator the probe picks (TCG on the development machines),
// through the real gRPC API of a vmm-agent process. Tests share VMs where they can: every boot
// costs seconds of emulated CPU on a 2-core machine that others use too.

const MAIN = "e2e/main";
const STRESS = "e2e/stress";
const MEMORY_MIB = 384;
const VCPUS = 2;
const QUOTA_BYTES = 96 * 1024 * 1024;

let root: string;
let artifacts: GuestArtifacts;
let agent: VmmAgentProcess;
let volumeDir: string;
let roVolumeDir: string;

function agentEnv(): Record<string, string> {
  return {
    ...guestEnv(artifacts),
    MSB_MAX_VMS: "3",
    MSB_LOG_LEVEL: "info",
    MSB_VOLUME_ROOTS: root,
  };
}

function createVm(vmId: string, extra: Record<string, unknown> = {}): Promise<CreateVmResponse> {
  const fields = { memoryMib: MEMORY_MIB, vcpus: VCPUS, diskQuotaBytes: QUOTA_BYTES, ...extra };
  return createTestVm(agent.client, artifacts.rootfsPath, vmId, fields);
}

function stopVm(vmId: string, removeDisk = false): Promise<StopVmResponse> {
  return unary(agent.client, "stopVm", { vmId, timeoutMs: 0, removeDisk });
}

beforeAll(async () => {
  ({ artifacts, root } = await prepare("msb-e2e-vmm-"));
  volumeDir = join(root, "shared");
  roVolumeDir = join(root, "readonly");
  await mkdir(volumeDir);
  await mkdir(roVolumeDir);
  await writeFile(join(roVolumeDir, "from-host.txt"), "hello from the host\n");
  agent = await startVmmAgent(join(root, "home"), agentEnv());
  await createVm(MAIN, {
    env: ["GREETING=hello", "PATH=/usr/local/bin:/usr/bin:/bin"],
    workdir: "/work",
    volumes: [
      { hostPath: volumeDir, guestPath: "/mnt/shared", readOnly: false },
      { hostPath: roVolumeDir, guestPath: "/mnt/ro", readOnly: true },
    ],
  });
});

// Nothing of ours may be left running once the vmm-agent stopped.
afterAll(() => stopAndCheckClean(agent, root));

describe("host", () => {
  it("names its accelerator and, when it is not KVM, why", async () => {
    const host = await unary<object, GetHostInfoResponse>(agent.client, "getHostInfo", {});
    expect(["kvm", "tcg"]).toContain(host.accelerator);
    if (host.accelerator === "tcg") expect(host.acceleratorNote).not.toBe("");
    expect(host.hypervisor).toBe("qemu");
    expect(host.maxVms).toBe(3);
    expect(host.vmsRunning).toBeGreaterThanOrEqual(1);
    const { vms } = await unary<object, ListVmsResponse>(agent.client, "listVms", {});
    const vm = vms.find((v) => v.vmId === MAIN);
    expect(vm).toMatchObject({
      state: VmState.VM_STATE_RUNNING,
      accelerator: host.accelerator,
      acceleratorNote: host.acceleratorNote,
      memoryMib: MEMORY_MIB,
      vcpus: VCPUS,
      startKind: "cold",
    });
    expect(vm!.pid).toBeGreaterThan(0);
  });
});

describe("python REPL", () => {
  it("prints 25 for print(5*5)", async () => {
    const r = await runCode(agent.client, { vmId: MAIN, language: "python", code: "print(5*5)" });
    expect(r.result.status).toBe(RunStatus.RUN_STATUS_SUCCESS);
    expect(r.stdout).toBe("25\n");
  });

  it("keeps state between calls", async () => {
    await runCode(agent.client, { vmId: MAIN, language: "python", code: "counter = 41" });
    const r = await runCode(agent.client, {
      vmId: MAIN,
      language: "python",
      code: "counter += 1\nprint(counter)",
    });
    expect(r.stdout).toBe("42\n");
    expect(r.result.restarted).toBe(false);
  });

  it("reports an exception as an error with its traceback on stderr", async () => {
    const r = await runCode(agent.client, {
      vmId: MAIN,
      language: "python",
      code: "def f():\n    return 1 / 0\nf()",
    });
    expect(r.result.status).toBe(RunStatus.RUN_STATUS_ERROR);
    expect(r.result.errorType).toBe("ZeroDivisionError");
    expect(r.stderr).toContain("Traceback");
    expect(r.stderr).toContain("ZeroDivisionError");
  });

  it("interrupts a cell past its timeout and the next call works", async () => {
    const r = await runCode(agent.client, {
      vmId: MAIN,
      language: "python",
      code: "while True: pass",
      timeoutMs: 2_000,
    });
    expect(r.result.status).toBe(RunStatus.RUN_STATUS_TIMEOUT);
    const next = await runCode(agent.client, {
      vmId: MAIN,
      language: "python",
      code: "print('still here')",
    });
    expect(next.result.status).toBe(RunStatus.RUN_STATUS_SUCCESS);
    expect(next.stdout).toBe("still here\n");
  });
});

describe("node REPL", () => {
  it("supports top-level await and keeps state", async () => {
    const first = await runCode(agent.client, {
      vmId: MAIN,
      language: "node",
      code: "const answer = await new Promise((resolve) => setTimeout(() => resolve(6 * 7), 10));",
    });
    expect(first.result.status).toBe(RunStatus.RUN_STATUS_SUCCESS);
    const second = await runCode(agent.client, {
      vmId: MAIN,
      language: "node",
      code: "console.log(answer)",
    });
    expect(second.stdout).toBe("42\n");
  });
});

describe("exec", () => {
  it("runs argv without a shell and reports exit codes", async () => {
    const ls = await exec(agent.client, { vmId: MAIN, command: "ls", args: ["-la", "/"] });
    expect(ls.result.exitCode).toBe(0);
    expect(ls.stdout).toContain("usr");
    const three = await exec(agent.client, { vmId: MAIN, command: "sh", args: ["-c", "exit 3"] });
    expect(three.result.exitCode).toBe(3);
    expect(three.result.timedOut).toBe(false);
  });

  it("applies the VM's env and workdir, and the call's own env", async () => {
    const r = await exec(agent.client, {
      vmId: MAIN,
      command: "sh",
      args: ["-c", 'echo "$GREETING $WHO"; pwd; cat /proc/sys/kernel/hostname'],
      env: ["WHO=world"],
    });
    expect(r.stdout).toBe("hello world\n/work\nmain\n");
  });

  it("kills a command past its timeout", async () => {
    const r = await exec(agent.client, {
      vmId: MAIN,
      command: "sleep",
      args: ["60"],
      timeoutMs: 1_000,
    });
    expect(r.result.timedOut).toBe(true);
  });

  it("delivers a signal to a running command by its exec id", async () => {
    let started!: () => void;
    const running = new Promise<void>((resolve) => (started = resolve));
    const sleeper = exec(
      agent.client,
      {
        vmId: MAIN,
        execId: "sleeper",
        command: "sh",
        args: ["-c", "echo started; exec sleep 600"],
      },
      180_000,
      () => started(),
    );
    await running;
    await unary(agent.client, "signalProcess", { vmId: MAIN, execId: "sleeper", signal: 15 });
    const r = await sleeper;
    expect(r.result.signal).toBe(15);
    expect(r.result.timedOut).toBe(false);
  });

  it("feeds stdin", async () => {
    const r = await exec(agent.client, {
      vmId: MAIN,
      command: "wc",
      args: ["-c"],
      stdin: Buffer.from("12345"),
    });
    expect(r.stdout.trim()).toBe("5");
  });
});

describe("limits", () => {
  it("gives the guest the memory and vCPUs asked for", async () => {
    const meminfo = await exec(agent.client, {
      vmId: MAIN,
      command: "cat",
      args: ["/proc/meminfo"],
    });
    const totalKib = Number(/^MemTotal:\s+(\d+) kB/m.exec(meminfo.stdout)?.[1]);
    // The kernel keeps some RAM for itself; what is left must be close to the size asked.
    expect(totalKib).toBeLessThanOrEqual(MEMORY_MIB * 1024);
    expect(totalKib).toBeGreaterThan(MEMORY_MIB * 1024 * 0.85);
    const nproc = await exec(agent.client, { vmId: MAIN, command: "nproc" });
    expect(nproc.stdout.trim()).toBe(String(VCPUS));
  });

  it("fails writes past the disk quota with ENOSPC inside the guest, host untouched", async () => {
    const r = await exec(agent.client, {
      vmId: MAIN,
      command: "dd",
      args: ["if=/dev/zero", "of=/var/fill", "bs=1M", "count=200"],
    });
    expect(r.result.exitCode).not.toBe(0);
    expect(r.stderr).toContain("No space left on device");
    const disk = join(agent.msbHome, "sandboxes", ...MAIN.split("/"), "scratch.ext4");
    const st = await stat(disk);
    expect(st.size).toBe(QUOTA_BYTES);
    expect(st.blocks * 512).toBeLessThanOrEqual(QUOTA_BYTES);
    await exec(agent.client, { vmId: MAIN, command: "rm", args: ["-f", "/var/fill"] });
  });

  it("refuses VMs beyond the host's capacity with CAPACITY_EXHAUSTED", async () => {
    const tooBig = await rejection(createVm("e2e/too-big", { memoryMib: 4 * 1024 * 1024 }));
    expect(tooBig.code).toBe("CAPACITY_EXHAUSTED");
  });
});

describe("files and volumes", () => {
  it("writes and reads guest files", async () => {
    await unary(agent.client, "writeFile", {
      vmId: MAIN,
      path: "/work/notes/a.txt",
      data: Buffer.from("written by the host"),
      mode: 0o600,
      createParents: true,
    });
    const back = await unary<object, ReadFileResponse>(agent.client, "readFile", {
      vmId: MAIN,
      path: "/work/notes/a.txt",
      maxBytes: 0,
    });
    expect(back.data.toString()).toBe("written by the host");
    const missing = await rejection(
      unary(agent.client, "readFile", { vmId: MAIN, path: "/nope", maxBytes: 0 }),
    );
    expect(missing.code).toBe("FILE_NOT_FOUND");
  });

  it("shares host directories over 9p, read-only when asked", async () => {
    const w = await exec(agent.client, {
      vmId: MAIN,
      command: "sh",
      args: ["-c", "echo from-guest > /mnt/shared/guest.txt && cat /mnt/ro/from-host.txt"],
    });
    expect(w.result.exitCode).toBe(0);
    expect(w.stdout).toBe("hello from the host\n");
    expect(await readFile(join(volumeDir, "guest.txt"), "utf8")).toBe("from-guest\n");
    const ro = await exec(agent.client, {
      vmId: MAIN,
      command: "sh",
      args: ["-c", "echo x > /mnt/ro/denied.txt"],
    });
    expect(ro.result.exitCode).not.toBe(0);
    expect(await readdir(roVolumeDir)).toEqual(["from-host.txt"]);
  });

  it("reports guest metrics and the host RSS of QEMU", async () => {
    const { metrics } = await unary<object, GetVmMetricsResponse>(agent.client, "getVmMetrics", {
      vmId: MAIN,
    });
    expect(metrics).toMatchObject({ vmId: MAIN, running: true });
    expect(metrics!.memoryTotalBytes).toBeGreaterThan(MEMORY_MIB * 1024 * 1024 * 0.85);
    expect(metrics!.diskTotalBytes).toBeGreaterThan(0);
    expect(metrics!.hostRssBytes).toBeGreaterThan(10 * 1024 * 1024);
  });
});

describe("hostile code", () => {
  beforeAll(async () => {
    await createVm(STRESS, { memoryMib: 256, vcpus: 1, network: NetworkMode.NETWORK_MODE_NONE });
  });

  it("has no network interface when the network is none", async () => {
    const r = await exec(agent.client, { vmId: STRESS, command: "ls", args: ["/sys/class/net"] });
    const interfaces = r.stdout.split(/\s+/).filter(Boolean);
    expect(interfaces).toContain("lo");
    expect(interfaces.filter((i) => i.startsWith("eth"))).toEqual([]);
  });

  it("survives a memory hog: the hog dies, the VM answers", async () => {
    const hog = await exec(agent.client, {
      vmId: STRESS,
      command: "python3",
      args: ["-c", "x = []\nwhile True: x.append(bytearray(16 * 1024 * 1024))"],
      timeoutMs: 60_000,
    });
    expect(hog.result.exitCode).not.toBe(0);
    const alive = await exec(agent.client, { vmId: STRESS, command: "echo", args: ["alive"] });
    expect(alive.stdout).toBe("alive\n");
  });

  it("survives a fork bomb with a timeout, or reports the VM dead; never hangs", async () => {
    // The shell stays in the foreground, so the timeout fires and the guest kills the whole
    // process group and its cgroup, bomb included.
    const bomb = await exec(agent.client, {
      vmId: STRESS,
      command: "sh",
      args: ["-c", "bomb() { bomb | bomb & }; bomb; sleep 600"],
      timeoutMs: 3_000,
    });
    expect(bomb.result.timedOut).toBe(true);
    const after = await exec(agent.client, { vmId: STRESS, command: "echo", args: ["alive"] })
      .then((r) => r.stdout)
      .catch((err: { code?: string }) => err.code);
    if (after !== "alive\n") expect(["VM_DIED", "AGENT_TIMEOUT"]).toContain(after);
  });

  it("refuses a VM beyond MSB_MAX_VMS", async () => {
    await createVm("e2e/third", { memoryMib: 128, vcpus: 1 });
    const fourth = await rejection(createVm("e2e/fourth", { memoryMib: 128, vcpus: 1 }));
    expect(fourth.code).toBe("CAPACITY_EXHAUSTED");
    await stopVm("e2e/third", true);
  });

  it("notices at once when QEMU dies and answers VM_DIED instead of hanging", async () => {
    const { vms } = await unary<object, ListVmsResponse>(agent.client, "listVms", {});
    const pid = vms.find((v) => v.vmId === STRESS)!.pid;
    process.kill(pid, "SIGKILL");
    const err = await rejection(exec(agent.client, { vmId: STRESS, command: "true" }));
    expect(err.code).toBe("VM_DIED");
    const after = await unary<object, ListVmsResponse>(agent.client, "listVms", {});
    const vm = after.vms.find((v) => v.vmId === STRESS)!;
    expect(vm.state).toBe(VmState.VM_STATE_FAILED);
    expect(vm.reason).toContain("SIGKILL");
    await stopVm(STRESS, true);
  });
});

describe("stop and start", () => {
  it("stops a VM, leaves only its disk and log, and keeps the disk for the next start", async () => {
    await exec(agent.client, {
      vmId: MAIN,
      command: "sh",
      args: ["-c", "echo persisted > /root/state.txt"],
    });
    const { vm } = await stopVm(MAIN);
    expect(vm!.state).toBe(VmState.VM_STATE_STOPPED);
    const dir = join(agent.msbHome, "sandboxes", ...MAIN.split("/"));
    expect((await readdir(dir)).sort()).toEqual(["console.log", "scratch.ext4"]);
    expect(await qemuPidsMentioning(dir)).toEqual([]);
    const stopped = await rejection(exec(agent.client, { vmId: MAIN, command: "true" }));
    expect(stopped.code).toBe("SANDBOX_STOPPED");

    await createVm(MAIN, { keepDisk: true });
    const r = await exec(agent.client, { vmId: MAIN, command: "cat", args: ["/root/state.txt"] });
    expect(r.stdout).toBe("persisted\n");
  });
});

describe("vmm-agent death", () => {
  it("takes its QEMUs with it on kill -9, and a restarted vmm-agent reaps leftovers", async () => {
    const home = join(root, "home-killed");
    // Ids of their own: the restarted agent removes its firewall chain when it stops, and
    // must not take the main agent's with it.
    const ownIds = { MSB_VM_UID_BASE: "1900100000", MSB_VM_GID_BASE: "1900100000" };
    const victim = await startVmmAgent(home, { ...agentEnv(), ...ownIds, MSB_ACCEL: "tcg" });
    const previous = agent;
    agent = victim;
    try {
      await createVm("ns/doomed", { memoryMib: 128, vcpus: 1 });
    } finally {
      agent = previous;
    }
    const dir = join(home, "sandboxes", "ns", "doomed");
    expect(await qemuPidsMentioning(dir)).toHaveLength(1);
    victim.client.close();
    victim.process.kill("SIGKILL");
    await victim.exited;
    // PDEATHSIG: the kernel kills QEMU when its parent dies; nothing to wait on but the effect.
    await eventually("QEMU gone after its vmm-agent was killed", async () => {
      return (await qemuPidsMentioning(dir)).length === 0;
    });

    // A leftover that did not die (started without PDEATHSIG, e.g. by an older version):
    // a real qemu-system process whose pidfile sits in a VM directory.
    const orphanDir = join(home, "sandboxes", "ns", "orphan");
    await mkdir(orphanDir, { recursive: true });
    const orphan = spawn(
      "qemu-system-x86_64",
      [
        "-M",
        "none",
        "-nodefaults",
        "-display",
        "none",
        "-qmp",
        `unix:${join(orphanDir, "qmp.sock")},server=on,wait=off`,
      ],
      { stdio: "ignore", detached: true },
    );
    const orphanExit = new Promise((resolve) => orphan.once("exit", resolve));
    await writeFile(join(orphanDir, "qemu.pid"), `${orphan.pid}\n`);
    await eventually("orphan QEMU listening", async () =>
      stat(join(orphanDir, "qmp.sock")).then(
        () => true,
        () => false,
      ),
    );

    const restarted = await startVmmAgent(home, { ...agentEnv(), ...ownIds, MSB_ACCEL: "tcg" });
    try {
      await orphanExit; // killed by the new vmm-agent's leftover scan
      expect((await readdir(dir)).sort()).toEqual(["console.log", "scratch.ext4"]);
      expect(await readdir(orphanDir)).toEqual([]);
      expect(restarted.logs.join("\n")).toContain("reaped what an earlier vmm-agent left");

      // The restarted vmm-agent does not track the dead VM, yet deletes its disk when asked
      // (the control plane's sandbox.stop with remove); a plain stop still does not know it.
      const plain = await rejection(
        unary(restarted.client, "stopVm", { vmId: "ns/doomed", timeoutMs: 0, removeDisk: false }),
      );
      expect(plain.code).toBe("SANDBOX_NOT_FOUND");
      const removed: StopVmResponse = await unary(restarted.client, "stopVm", {
        vmId: "ns/doomed",
        timeoutMs: 0,
        removeDisk: true,
      });
      expect(removed.vm!.state).toBe(VmState.VM_STATE_STOPPED);
      await expect(stat(dir)).rejects.toMatchObject({ code: "ENOENT" });
    } finally {
      await restarted.stop();
    }
  });
});
