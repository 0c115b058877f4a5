import { readdir } from "node:fs/promises";
import { createConnection } from "node:net";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NetworkMode, type CreateVmResponse, type GetHostInfoResponse } from "@msb/proto";
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
import { freePort } from "@msb/testing";

// The warm pool with real QEMU: restored clones wait paused (QMP stop) and a create claims
// one (cont + identity + reseed); the pool refills behind it.

let root: string;
let memoryDir: string;
let artifacts: GuestArtifacts;
let agent: VmmAgentProcess;
let coldPid = 0;

function createVm(vmId: string, extra: Record<string, unknown> = {}): Promise<CreateVmResponse> {
  const fields = { env: PATH_ENV, ...extra };
  return createTestVm(agent.client, artifacts.rootfsPath, vmId, fields);
}

function hostInfo(): Promise<GetHostInfoResponse> {
  return vmmHostInfo(agent.client);
}

async function poolFull(): Promise<string> {
  let key = "";
  await eventually(
    "a full pool",
    async () => {
      const t = (await hostInfo()).templates.find((x) => x.state === "ready");
      key = t?.key ?? "";
      return t !== undefined && t.poolReady === t.poolTarget && t.poolTarget === 1;
    },
    300_000,
  );
  return key;
}

/** `query-status` over a VM's QMP socket (a minimal QMP client: greeting, capabilities). */
async function qmpStatus(socketPath: string): Promise<{ running: boolean; status: string }> {
  const socket = createConnection({ path: socketPath });
  const lines = createInterface({ input: socket })[Symbol.asyncIterator]();
  try {
    await lines.next(); // greeting
    socket.write('{"execute":"qmp_capabilities"}\n');
    await lines.next();
    socket.write('{"execute":"query-status"}\n');
    for (;;) {
      const line = await lines.next();
      const msg = JSON.parse(String(line.value)) as {
        return?: { running: boolean; status: string };
      };
      if (msg.return !== undefined) return msg.return;
    }
  } finally {
    socket.destroy();
  }
}

async function pooledDirs(key: string): Promise<string[]> {
  const dir = join(agent.msbHome, "templates", key, "pool");
  return (await readdir(dir).catch(() => [])).map((d) => join(dir, d));
}

function python(vmId: string, code: string): Promise<string> {
  return runPython(agent.client, vmId, code);
}

beforeAll(async () => {
  ({ artifacts, root } = await prepare("msb-e2e-pool-"));
  ({ agent, memoryDir } = await startTemplateAgent(root, artifacts, {
    // Room for the three claimed VMs of these tests, the seed VM and the pool: a create
    // that needs the pool's slot evicts it (and would be a restore instead of a claim).
    MSB_MAX_VMS: "6",
    MSB_POOL_SIZE: "1",
  }));
  const cold = await createVm("p/cold");
  expect(cold.vm?.startKind).toBe("cold");
  coldPid = cold.vm?.pid ?? 0;
});

// stopAll takes the pooled VMs down too.
afterAll(() => stopAndCheckClean(agent, root, memoryDir));

describe("warm pool", () => {
  it("keeps a restored clone paused, hands it to the next create and refills", async () => {
    const key = await poolFull();
    const [pooled] = await pooledDirs(key);
    expect(pooled).toBeDefined();
    expect(await qmpStatus(join(pooled!, "qmp.sock"))).toMatchObject({
      running: false,
      status: "paused",
    });
    expect((await hostInfo()).vmsPaused).toBe(1);

    const claimed = await createVm("p/a");
    expect(claimed.vm?.startKind).toBe("pool");
    // The pooled QEMU was started confined, with the template's ('public') network gid.
    const confined = await qemuConfinement(claimed.vm?.pid ?? 0);
    expect(confined.uid).not.toBe("0");
    expect(confined.seccomp).toBe("2");
    expect(confined.gid).toBe((await qemuConfinement(coldPid)).gid);
    expect(await python("p/a", "print(1)")).toBe("1\n");
    expect(await python("p/a", "import socket; print(socket.gethostname())")).toBe("a\n");
    // The claimed VM now lives in its sandbox's directory and runs.
    const sandboxDir = join(agent.msbHome, "sandboxes", "p", "a");
    expect(await qmpStatus(join(sandboxDir, "qmp.sock"))).toMatchObject({ running: true });

    await poolFull();
    const [refilled] = await pooledDirs(key);
    expect(refilled).toBeDefined();
    expect(refilled).not.toBe(pooled);
    const starts = (await hostInfo()).starts;
    expect(starts?.poolHits).toBe(1);
  });

  it("gives two pooled clones different entropy and Python random state", async () => {
    await poolFull();
    expect((await createVm("p/b")).vm?.startKind).toBe("pool");
    const probe = "import random\nprint(open('/dev/urandom','rb').read(16).hex(), random.random())";
    const a = await python("p/a", probe);
    const b = await python("p/b", probe);
    expect(a.split(" ")[0]).not.toBe(b.split(" ")[0]);
    expect(a.split(" ")[1]).not.toBe(b.split(" ")[1]);
  });

  it("forwards a host port into a claimed VM (hostfwd_add at claim)", async () => {
    await poolFull();
    const hostPort = await freePort();
    const vm = await createVm("p/web", {
      ports: [{ hostPort, guestPort: 8000, protocol: "tcp", hostAddress: "127.0.0.1" }],
    });
    expect(vm.vm?.startKind).toBe("pool");
    await exec(agent.client, {
      vmId: "p/web",
      command: "sh",
      args: [
        "-c",
        "cd /tmp && echo served > index.txt && (python3 -m http.server 8000 >/dev/null 2>&1 &)",
      ],
    });
    let body = "";
    await eventually(
      "the guest's web server through the forwarded port",
      async () => {
        body = await fetch(`http://127.0.0.1:${hostPort}/index.txt`)
          .then((r) => r.text())
          .catch(() => "");
        return body === "served\n";
      },
      120_000,
    );
    expect(body).toBe("served\n");
  });

  it("never hands a pooled public VM to an any create", async () => {
    await unary(agent.client, "stopVm", { vmId: "p/b", timeoutMs: 0, removeDisk: true });
    const key = await poolFull();
    const [pooled] = await pooledDirs(key);
    // The firewall tells policies apart by the QEMU's gid, fixed when it started: an 'any'
    // VM needs a QEMU of its own.
    const any = await createVm("p/any", { network: NetworkMode.NETWORK_MODE_ANY });
    expect(any.vm?.startKind).toBe("cold");
    const gid = (await qemuConfinement(any.vm?.pid ?? 0)).gid;
    expect(gid).not.toBe((await qemuConfinement(coldPid)).gid);
    expect(await pooledDirs(key)).toEqual([pooled]);
    expect((await hostInfo()).starts?.poolHits).toBe(3);
    await unary(agent.client, "stopVm", { vmId: "p/any", timeoutMs: 0, removeDisk: true });
  });
});
