/**
 * Templates / pool / idle-pause probe: CreateVm → first output of `print(1)` for a cold boot,
 * a template restore and a pool claim; template build time; host RSS and PSS of an idle
 * restored VM against a cold one; the cost of the first call after an idle pause.
 * Real VMs through the real gRPC API of vmm-agent processes; prints medians as JSON.
 *
 *   npx tsc -b apps/vmm-agent && npx tsx bench/src/templates-probe.ts [--runs 5]
 */
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  CreateVmRequest,
  NetworkMode,
  RunCodeRequest,
  VmmServiceClient,
  callUnary,
  createGrpcChannelCredentials,
  readServerStream,
  type CreateVmResponse,
  type GetHostInfoResponse,
} from "@msb/proto";

const run = promisify(execFile);
const REPO = fileURLToPath(new URL("../..", import.meta.url));
const runsArg = process.argv.indexOf("--runs");
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 5;
const SERVICE = "vmm-agent";

async function lastLine(script: string): Promise<string> {
  const { stdout } = await run("bash", [join(REPO, script)], { maxBuffer: 1 << 26 });
  return stdout.trim().split("\n").pop() ?? "";
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

interface Agent {
  client: VmmServiceClient;
  child: ChildProcess;
  home: string;
  shm: string;
}

async function startAgent(env: Record<string, string>): Promise<Agent> {
  const home = await mkdtemp(join(tmpdir(), "msb-bench-templates-"));
  const shm = join("/dev/shm", basename(home));
  const address = `unix:${join(home, "run", "vmm-agent.sock")}`;
  const child = spawn(process.execPath, [join(REPO, "apps/vmm-agent/dist/main.js")], {
    env: {
      ...process.env,
      MSB_HOME: home,
      MSB_VMM_AGENT_ADDR: address,
      MSB_TEMPLATE_MEMORY_DIR: shm,
      ...env,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: child.stdout }).on("line", (line) => {
      if (process.env["MSB_PROBE_VERBOSE"] === "1") console.error(line);
      if (line.includes('"vmm-agent listening"')) resolve();
    });
    child.once("exit", (code) => reject(new Error(`vmm-agent exited with ${code}`)));
  });
  return {
    client: new VmmServiceClient(address, createGrpcChannelCredentials()),
    child,
    home,
    shm,
  };
}

async function stopAgent(a: Agent): Promise<void> {
  a.client.close();
  const exited = new Promise((r) => a.child.once("exit", r));
  a.child.kill("SIGTERM");
  await exited;
  await rm(a.home, { recursive: true, force: true });
  await rm(a.shm, { recursive: true, force: true });
}

function unary<Req, Res>(client: VmmServiceClient, method: string, request: Req): Promise<Res> {
  const fn = (client[method as keyof VmmServiceClient] as (...a: unknown[]) => unknown).bind(
    client,
  );
  return callUnary<Req, Res>(SERVICE, fn as never, request, { timeoutMs: 300_000 });
}

async function main(): Promise<void> {
  const [kernel, initramfs, rootfs] = await Promise.all([
    lastLine("tools/kernel/build.sh"),
    lastLine("tools/agent/build.sh"),
    lastLine("e2e/src/vmm/build-test-rootfs.sh"),
  ]);
  const volume = await mkdtemp(join(tmpdir(), "msb-bench-vol-"));
  await mkdir(volume, { recursive: true });
  const base = {
    MSB_KERNEL: kernel,
    MSB_INITRAMFS: initramfs,
    MSB_LOG_LEVEL: "info",
    // The vmm-agent mounts nothing outside MSB_VOLUME_ROOTS.
    MSB_VOLUME_ROOTS: volume,
  };

  const create = (a: Agent, vmId: string, extra: Partial<CreateVmRequest> = {}) =>
    unary<CreateVmRequest, CreateVmResponse>(
      a.client,
      "createVm",
      CreateVmRequest.fromPartial({
        vmId,
        rootfsPath: rootfs,
        memoryMib: 512,
        vcpus: 1,
        network: NetworkMode.NETWORK_MODE_PUBLIC,
        env: ["PATH=/usr/local/bin:/usr/bin:/bin"],
        ...extra,
      }),
    );
  const stop = (a: Agent, vmId: string) =>
    unary(a.client, "stopVm", { vmId, timeoutMs: 0, removeDisk: true });
  const firstOutput = async (a: Agent, vmId: string, t0: number): Promise<number> => {
    const call = a.client.runCode(
      RunCodeRequest.fromPartial({ vmId, language: "python", code: "print(1)" }),
      { deadline: new Date(Date.now() + 300_000) },
    );
    let at = 0;
    for await (const m of readServerStream(SERVICE, call)) {
      if (m.event?.$case === "output" && at === 0) at = Date.now();
    }
    return at - t0;
  };
  const host = (a: Agent) => unary<object, GetHostInfoResponse>(a.client, "getHostInfo", {});
  const memory = async (pid: number): Promise<{ rssMib: number; pssMib: number }> => {
    const text = await readFile(`/proc/${pid}/smaps_rollup`, "utf8");
    const kb = (k: string): number => Number(new RegExp(`^${k}:\\s+(\\d+)`, "m").exec(text)?.[1]);
    return { rssMib: kb("Rss") / 1024, pssMib: kb("Pss") / 1024 };
  };

  // 1. cold vs template restore (no pool), idle pause after 2 s.
  const a = await startAgent({ ...base, MSB_POOL_SIZE: "0", MSB_IDLE_PAUSE_SECONDS: "2" });
  const cold: number[] = [];
  const restored: number[] = [];
  const resumeCall: number[] = [];
  const awakeCall: number[] = [];
  let buildMs = 0;
  let memCold = { rssMib: 0, pssMib: 0 };
  let memRestored = { rssMib: 0, pssMib: 0 };
  try {
    for (let i = 0; i < RUNS; i++) {
      // A volume makes a VM ineligible for templates: always a cold boot.
      const t0 = Date.now();
      await create(a, `b/cold-${i}`, {
        volumes: [{ hostPath: volume, guestPath: "/mnt/v", readOnly: true }],
      });
      cold.push(await firstOutput(a, `b/cold-${i}`, t0));
      if (i < RUNS - 1) await stop(a, `b/cold-${i}`);
      console.error(`cold ${i + 1}/${RUNS}: ${cold.at(-1)} ms`);
    }
    await create(a, "b/seed");
    for (;;) {
      const t = (await host(a)).templates.find((x) => x.state !== "building");
      if (t !== undefined) {
        buildMs = t.buildMs;
        break;
      }
      await sleep(200);
    }
    await stop(a, "b/seed");
    for (let i = 0; i < RUNS; i++) {
      const t0 = Date.now();
      const r = await create(a, `b/tpl-${i}`);
      if (r.vm?.startKind !== "template") throw new Error(`expected a restore: ${r.vm?.startKind}`);
      restored.push(await firstOutput(a, `b/tpl-${i}`, t0));
      if (i < RUNS - 1) await stop(a, `b/tpl-${i}`);
      console.error(`template ${i + 1}/${RUNS}: ${restored.at(-1)} ms`);
    }
    // Both kept VMs have run print(1) once; let them settle, then measure memory.
    await sleep(5_000);
    const list = await unary<object, { vms: { vmId: string; pid: number }[] }>(
      a.client,
      "listVms",
      {},
    );
    const pid = (id: string): number => list.vms.find((v) => v.vmId === id)?.pid ?? 0;
    memCold = await memory(pid(`b/cold-${RUNS - 1}`));
    memRestored = await memory(pid(`b/tpl-${RUNS - 1}`));
    for (let i = 0; i < RUNS; i++) {
      let t = Date.now();
      await firstOutput(a, `b/tpl-${RUNS - 1}`, t);
      awakeCall.push(Date.now() - t);
      await sleep(3_000); // > MSB_IDLE_PAUSE_SECONDS: the VM is paused now
      t = Date.now();
      await firstOutput(a, `b/tpl-${RUNS - 1}`, t);
      resumeCall.push(Date.now() - t);
    }
  } finally {
    await stopAgent(a);
  }

  // 2. pool claims.
  const b = await startAgent({ ...base, MSB_POOL_SIZE: "1", MSB_IDLE_PAUSE_SECONDS: "0" });
  const pooled: number[] = [];
  try {
    await create(b, "p/seed");
    for (let i = 0; i < RUNS; i++) {
      for (;;) {
        const t = (await host(b)).templates.find((x) => x.state === "ready");
        if (t !== undefined && t.poolReady === 1) break;
        await sleep(200);
      }
      await sleep(2_000); // let the refill's CPU burst end: measure the claim alone
      const t0 = Date.now();
      const r = await create(b, `p/pool-${i}`);
      if (r.vm?.startKind !== "pool") throw new Error(`expected a claim: ${r.vm?.startKind}`);
      pooled.push(await firstOutput(b, `p/pool-${i}`, t0));
      await stop(b, `p/pool-${i}`);
      console.error(`pool ${i + 1}/${RUNS}: ${pooled.at(-1)} ms`);
    }
  } finally {
    await stopAgent(b);
    await rm(volume, { recursive: true, force: true });
  }

  const round = (v: number): number => Math.round(v * 10) / 10;
  const result = {
    runs: RUNS,
    createToFirstOutputMs: {
      cold: median(cold),
      template: median(restored),
      pool: median(pooled),
    },
    templateBuildMs: buildMs,
    idleVmMemoryMib: {
      cold: { rss: round(memCold.rssMib), pss: round(memCold.pssMib) },
      restored: { rss: round(memRestored.rssMib), pss: round(memRestored.pssMib) },
    },
    printCallMs: { awake: median(awakeCall), afterIdlePause: median(resumeCall) },
    samples: { cold, restored, pooled, awakeCall, resumeCall },
  };
  console.log(JSON.stringify(result, null, 2));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
