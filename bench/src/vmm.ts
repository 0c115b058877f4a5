/**
 * vmm-agent benchmark: boots real VMs through the real gRPC API of a vmm-agent process and
 * prints medians as a table and as JSON (also written to bench/results/).
 *
 *   npx tsc -b apps/vmm-agent && npx tsx bench/src/vmm.ts [--runs 10]
 *
 * Needs the guest kernel (tools/kernel/build.sh), the agent initramfs (tools/agent/build.sh)
 * and a rootfs with python3 (MSB_BENCH_ROOTFS, default: the e2e test rootfs).
 */
import { execFile, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import {
  CreateVmRequest,
  ExecRequest,
  NetworkMode,
  RunCodeRequest,
  VmmServiceClient,
  callUnary,
  createGrpcChannelCredentials,
  readServerStream,
  type CreateVmResponse,
  type GetHostInfoResponse,
  type GetVmMetricsResponse,
} from "@msb/proto";

const run = promisify(execFile);
const REPO = fileURLToPath(new URL("../..", import.meta.url));
const runsArg = process.argv.indexOf("--runs");
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 10;
const SERVICE = "vmm-agent";

async function lastLine(script: string): Promise<string> {
  const { stdout } = await run("bash", [join(REPO, script)], {
    maxBuffer: 64 * 1024 * 1024,
    timeout: 900_000,
  });
  return stdout.trim().split("\n").pop() ?? "";
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

function unary<Req, Res>(client: VmmServiceClient, method: string, request: Req): Promise<Res> {
  const fn = (client[method as keyof VmmServiceClient] as (...a: unknown[]) => unknown).bind(
    client,
  );
  return callUnary<Req, Res>(SERVICE, fn as never, request, { timeoutMs: 300_000 });
}

/** Resolves at the first output chunk and at the end of a RunCode/Exec stream. */
async function drain(
  stream: AsyncIterable<{ event?: { $case: string } | undefined }>,
): Promise<{ firstOutputAt: number; endAt: number }> {
  let firstOutputAt = 0;
  for await (const message of stream) {
    if (message.event?.$case === "output" && firstOutputAt === 0) firstOutputAt = Date.now();
  }
  return { firstOutputAt, endAt: Date.now() };
}

async function main(): Promise<void> {
  const [kernel, initramfs] = await Promise.all([
    lastLine("tools/kernel/build.sh"),
    lastLine("tools/agent/build.sh"),
  ]);
  const rootfs =
    process.env["MSB_BENCH_ROOTFS"] ?? (await lastLine("e2e/src/vmm/build-test-rootfs.sh"));
  const home = await mkdtemp(join(tmpdir(), "msb-bench-vmm-"));
  const address = `unix:${join(home, "run", "vmm-agent.sock")}`;
  const agent = spawn(process.execPath, [join(REPO, "apps/vmm-agent/dist/main.js")], {
    env: {
      ...process.env,
      MSB_HOME: home,
      MSB_VMM_AGENT_ADDR: address,
      MSB_KERNEL: kernel,
      MSB_INITRAMFS: initramfs,
    },
    stdio: ["ignore", "pipe", "inherit"],
  });
  await new Promise<void>((resolve, reject) => {
    createInterface({ input: agent.stdout }).on("line", (line) => {
      if (line.includes('"vmm-agent listening"')) resolve();
    });
    agent.once("exit", (code) => reject(new Error(`vmm-agent exited with ${code}`)));
  });
  const client = new VmmServiceClient(address, createGrpcChannelCredentials());
  const create = (vmId: string): Promise<CreateVmResponse> =>
    unary(
      client,
      "createVm",
      CreateVmRequest.fromPartial({
        vmId,
        rootfsPath: rootfs,
        memoryMib: 512,
        vcpus: 1,
        network: NetworkMode.NETWORK_MODE_PUBLIC,
      }),
    );
  const stop = (vmId: string): Promise<unknown> =>
    unary(client, "stopVm", { vmId, timeoutMs: 0, removeDisk: true });
  const runCell = (vmId: string, code: string) =>
    drain(
      readServerStream(
        SERVICE,
        client.runCode(RunCodeRequest.fromPartial({ vmId, language: "python", code }), {
          deadline: new Date(Date.now() + 300_000),
        }),
      ),
    );
  const execTrue = (vmId: string) =>
    drain(
      readServerStream(
        SERVICE,
        client.exec(ExecRequest.fromPartial({ vmId, command: "true" }), {
          deadline: new Date(Date.now() + 300_000),
        }),
      ),
    );

  try {
    const host = await unary<object, GetHostInfoResponse>(client, "getHostInfo", {});
    console.error(`accelerator: ${host.accelerator} ${host.acceleratorNote}`);

    const bootReadyMs: number[] = [];
    const createRoundTripMs: number[] = [];
    const firstPythonOutputMs: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const vmId = `bench/cold-${i}`;
      const t0 = Date.now();
      const { vm } = await create(vmId);
      createRoundTripMs.push(Date.now() - t0);
      bootReadyMs.push(vm!.bootMs);
      const { firstOutputAt } = await runCell(vmId, "print(1)");
      firstPythonOutputMs.push(firstOutputAt - t0);
      await stop(vmId);
      console.error(`cold boot ${i + 1}/${RUNS}: ready ${vm!.bootMs} ms`);
    }

    const warm = "bench/warm";
    await create(warm);
    await runCell(warm, "print(0)");
    await execTrue(warm);
    const execMs: number[] = [];
    const runCodeMs: number[] = [];
    for (let i = 0; i < Math.max(RUNS, 20); i++) {
      let t = Date.now();
      execMs.push((await execTrue(warm)).endAt - t);
      t = Date.now();
      runCodeMs.push((await runCell(warm, "print(1)")).endAt - t);
    }

    // Idle RSS: a few VMs booted and left alone (one REPL-free, like a fresh sandbox).
    const idle = ["bench/idle-0", "bench/idle-1", "bench/idle-2"];
    for (const id of idle) await create(id);
    await new Promise((resolve) => setTimeout(resolve, 5_000));
    const rss: number[] = [];
    for (const id of [...idle, warm]) {
      const { metrics } = await unary<object, GetVmMetricsResponse>(client, "getVmMetrics", {
        vmId: id,
      });
      if (id !== warm) rss.push(metrics!.hostRssBytes / 1024 / 1024);
    }
    for (const id of [...idle, warm]) await stop(id);

    const result = {
      accelerator: host.accelerator,
      acceleratorNote: host.acceleratorNote,
      hypervisor: host.version,
      hostCpus: host.hostCpus,
      runs: RUNS,
      medians: {
        coldBootToReadyMs: median(bootReadyMs),
        createVmRoundTripMs: median(createRoundTripMs),
        coldBootToFirstPythonOutputMs: median(firstPythonOutputMs),
        execTrueRoundTripMs: median(execMs),
        runCodePrintWarmMs: median(runCodeMs),
        hostRssIdleVmMib: Math.round(median(rss)),
      },
      samples: { bootReadyMs, createRoundTripMs, firstPythonOutputMs, execMs, runCodeMs, rss },
    };
    const rows: [string, string][] = [
      ["accelerator", result.accelerator],
      ["cold boot to READY (spawn → agent ready)", `${result.medians.coldBootToReadyMs} ms`],
      ["CreateVm round trip (incl. disk, admission)", `${result.medians.createVmRoundTripMs} ms`],
      ["cold boot to first Python output", `${result.medians.coldBootToFirstPythonOutputMs} ms`],
      ["Exec `true` round trip (warm VM)", `${result.medians.execTrueRoundTripMs} ms`],
      ["RunCode `print(1)` (warm VM, warm REPL)", `${result.medians.runCodePrintWarmMs} ms`],
      ["host RSS per idle VM (512 MiB guest)", `${result.medians.hostRssIdleVmMib} MiB`],
    ];
    const width = Math.max(...rows.map(([k]) => k.length));
    console.log(`vmm-agent benchmark — medians of ${RUNS} runs`);
    for (const [k, v] of rows) console.log(`${k.padEnd(width)}  ${v}`);
    console.log(JSON.stringify(result));
    const out = join(REPO, "bench", "results");
    await mkdir(out, { recursive: true });
    await writeFile(join(out, `vmm-${Date.now()}.json`), `${JSON.stringify(result, null, 2)}\n`);
  } finally {
    client.close();
    agent.kill("SIGTERM");
    await new Promise((resolve) => agent.once("exit", resolve));
    await rm(home, { recursive: true, force: true });
  }
}

await main();
