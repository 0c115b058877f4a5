import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type {
  CreateVmResponse,
  GetHostInfoResponse,
  ListVmsResponse,
  StopVmResponse,
} from "@msb/proto";
import {
  createVm as createTestVm,
  eventually,
  exec,
  hostInfo as vmmHostInfo,
  PATH_ENV,
  prepare,
  python as runPython,
  qemuConfinement,
  startTemplateAgent,
  stopAndCheckClean,
  unary,
  type GuestArtifacts,
  type VmmAgentProcess,
} from "./harness.js";

// Template snapshots with real QEMU: the first VM of a configuration cold-boots and asks for
// a template; the template is built in the background; later VMs of that configuration are
// restored from it, each with its own identity, entropy and disk.

const MEMORY_MIB = 256;

let root: string;
let memoryDir: string;
let artifacts: GuestArtifacts;
let agent: VmmAgentProcess;
let coldPid = 0;

function createVm(vmId: string, extra: Record<string, unknown> = {}): Promise<CreateVmResponse> {
  const fields = { memoryMib: MEMORY_MIB, env: PATH_ENV, ...extra };
  return createTestVm(agent.client, artifacts.rootfsPath, vmId, fields);
}

function stopVm(vmId: string): Promise<StopVmResponse> {
  return unary(agent.client, "stopVm", { vmId, timeoutMs: 0, removeDisk: true });
}

function hostInfo(): Promise<GetHostInfoResponse> {
  return vmmHostInfo(agent.client);
}

/** Templates have no event to wait on from outside: poll host info until one is ready. */
async function templateReady(memoryMib: number): Promise<string> {
  let key = "";
  await eventually(
    `a ready template of ${memoryMib} MiB`,
    async () => {
      const t = (await hostInfo()).templates.find(
        (x) => x.memoryMib === memoryMib && x.state === "ready",
      );
      key = t?.key ?? "";
      return t !== undefined;
    },
    300_000,
  );
  return key;
}

function python(vmId: string, code: string): Promise<string> {
  return runPython(agent.client, vmId, code);
}

beforeAll(async () => {
  ({ artifacts, root } = await prepare("msb-e2e-templates-"));
  ({ agent, memoryDir } = await startTemplateAgent(root, artifacts, {
    MSB_MAX_VMS: "4",
    // Restores only here (templates-pool.test.ts covers the pool): start kinds are exact.
    MSB_POOL_SIZE: "0",
    // Idle pause after 1 s: every call below may find its VM paused and must resume it.
    MSB_IDLE_PAUSE_SECONDS: "1",
  }));
  const cold = await createVm("t/cold");
  expect(cold.vm?.startKind).toBe("cold");
  coldPid = cold.vm?.pid ?? 0;
});

// stopAll: no QEMU left (clones, template builds), template RAM files gone.
afterAll(() => stopAndCheckClean(agent, root, memoryDir));

describe("template snapshots", () => {
  it("restores the second VM of a configuration from its template and it runs Python", async () => {
    await templateReady(MEMORY_MIB);
    const clone = await createVm("t/a");
    expect(clone.vm?.startKind).toBe("template");
    expect(await python("t/a", "print(1)")).toBe("1\n");
    // Confined like a cold boot (the vmm-agent runs as root here): a uid of its own, seccomp,
    // and the primary gid of its network policy (the cold VM's, also 'public').
    const confined = await qemuConfinement(clone.vm?.pid ?? 0);
    const cold = await qemuConfinement(coldPid);
    expect(confined.uid).not.toBe("0");
    expect(confined.uid).not.toBe(cold.uid);
    expect(confined.seccomp).toBe("2");
    expect(confined.gid).toBe(cold.gid);
    const host = await hostInfo();
    expect(host.starts?.templateRestores).toBeGreaterThanOrEqual(1);
    expect(host.starts?.coldBoots).toBeGreaterThanOrEqual(1);
    expect(host.templates.find((t) => t.memoryMib === MEMORY_MIB)?.warmLanguage).toBe("python");
  });

  it("gives every clone its own hostname, kernel entropy and Python random state", async () => {
    await createVm("t/b", { hostname: "clone-b" });
    const probe = [
      "import random, socket",
      "print(socket.gethostname())",
      "print(open('/dev/urandom','rb').read(32).hex())",
      "print(random.random())",
    ].join("\n");
    const a = (await python("t/a", probe)).trim().split("\n");
    const b = (await python("t/b", probe)).trim().split("\n");
    expect(a[0]).toBe("a");
    expect(b[0]).toBe("clone-b");
    expect(a[1]).toMatch(/^[0-9a-f]{64}$/);
    expect(a[1]).not.toBe(b[1]);
    expect(a[2]).not.toBe(b[2]);
    // The warm-up and reseed cells leave nothing in the user's namespace.
    expect(await python("t/b", "print(sorted(k for k in globals() if 'msb' in k))")).toBe("[]\n");
  });

  it("never shows a file written in one clone to another or to a later clone", async () => {
    const w = await exec(agent.client, {
      vmId: "t/a",
      command: "sh",
      args: ["-c", "echo secret > /root/only-in-a && sync && cat /root/only-in-a"],
    });
    expect(w.stdout).toBe("secret\n");
    const absentB = {
      command: "sh",
      args: ["-c", "test -e /root/only-in-a && echo present || echo absent"],
    };
    expect((await exec(agent.client, { vmId: "t/b", ...absentB })).stdout).toBe("absent\n");
    await stopVm("t/b");
    await createVm("t/c");
    const absent = {
      command: "sh",
      args: ["-c", "test -e /root/only-in-a && echo present || echo absent"],
    };
    // b was cloned before the write, c after it: neither sees it.
    expect((await exec(agent.client, { vmId: "t/c", ...absent })).stdout).toBe("absent\n");
    const info = await unary<object, ListVmsResponse>(agent.client, "listVms", {});
    expect(info.vms.find((v) => v.vmId === "t/c")?.startKind).toBe("template");
    await stopVm("t/c");
  });

  it("builds a new template when an input of the key changes (memory)", async () => {
    const first = await templateReady(MEMORY_MIB);
    await stopVm("t/a");
    const other = await createVm("t/d", { memoryMib: MEMORY_MIB + 64 });
    expect(other.vm?.startKind).toBe("cold");
    const second = await templateReady(MEMORY_MIB + 64);
    expect(second).not.toBe(first);
    await stopVm("t/d");
    const again = await createVm("t/e", { memoryMib: MEMORY_MIB + 64 });
    expect(again.vm?.startKind).toBe("template");
    expect(await python("t/e", "print(6*7)")).toBe("42\n");
  });

  it("pauses an idle VM and resumes it for the next call", async () => {
    await eventually(
      "t/e paused",
      async () => {
        const list = await unary<object, ListVmsResponse>(agent.client, "listVms", {});
        return list.vms.find((v) => v.vmId === "t/e")?.paused === true;
      },
      60_000,
    );
    expect((await hostInfo()).vmsPaused).toBeGreaterThanOrEqual(1);
    expect(await python("t/e", "print(6*7+1)")).toBe("43\n");
  });
});
