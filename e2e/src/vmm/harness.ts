import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { expect } from "vitest";
import type { MsbError } from "@msb/errors";
import {
  callUnary,
  createGrpcChannelCredentials,
  ExecRequest,
  fromServiceError,
  NetworkMode,
  OutputStream,
  readServerStream,
  RunCodeRequest,
  RunStatus,
  VmmServiceClient,
  type CreateVmResponse,
  type ExecResult,
  type GetHostInfoResponse,
  type OutputChunk,
  type RunCodeResult,
} from "@msb/proto";

const run = promisify(execFile);

export const REPO_ROOT = fileURLToPath(new URL("../../..", import.meta.url));
const AGENT_MAIN = join(REPO_ROOT, "apps/vmm-agent/dist/main.js");

async function lastLine(command: string, args: string[] = []): Promise<string> {
  const { stdout } = await run(command, args, {
    cwd: REPO_ROOT,
    maxBuffer: 64 * 1024 * 1024,
    timeout: 900_000,
  });
  const line = stdout.trim().split("\n").pop()?.trim() ?? "";
  if (line === "") throw new Error(`${command} printed no path`);
  return line;
}

/** Guest kernel, agent initramfs and a python3+nodejs erofs rootfs; built once, cached. */
export async function guestArtifacts(): Promise<{
  kernelPath: string;
  initramfsPath: string;
  rootfsPath: string;
}> {
  const [kernelPath, initramfsPath, rootfsPath] = await Promise.all([
    lastLine("bash", [join(REPO_ROOT, "tools/kernel/build.sh")]),
    lastLine("bash", [join(REPO_ROOT, "tools/agent/build.sh")]),
    lastLine("bash", [join(REPO_ROOT, "e2e/src/vmm/build-test-rootfs.sh")]),
  ]);
  return { kernelPath, initramfsPath, rootfsPath };
}

/** Builds the workspace so `apps/vmm-agent/dist` is current. */
export async function buildVmmAgent(): Promise<void> {
  await run("npx", ["tsc", "-b", "apps/vmm-agent"], { cwd: REPO_ROOT, timeout: 300_000 });
}

export type GuestArtifacts = Awaited<ReturnType<typeof guestArtifacts>>;

/**
 * What every file's `beforeAll` starts with: the guest artifacts, a built vmm-agent and a
 * fresh temporary root (`prefix` names it) for MSB_HOME, volumes and whatever the file needs.
 */
export async function prepare(
  prefix: string,
): Promise<{ artifacts: GuestArtifacts; root: string }> {
  const [artifacts] = await Promise.all([guestArtifacts(), buildVmmAgent()]);
  return { artifacts, root: await mkdtemp(join(tmpdir(), prefix)) };
}

/** The vmm-agent's guest kernel and initramfs settings. */
export function guestEnv(artifacts: GuestArtifacts): Record<string, string> {
  return { MSB_KERNEL: artifacts.kernelPath, MSB_INITRAMFS: artifacts.initramfsPath };
}

/**
 * For the template and pool files: a vmm-agent (logging at info) whose templates keep their
 * memory in a RAM directory of their own, `/dev/shm/<name of root>`; pass `memoryDir` to
 * `stopAndCheckClean`, which checks that no template RAM file is left and removes it.
 */
export async function startTemplateAgent(
  root: string,
  artifacts: GuestArtifacts,
  env: Record<string, string>,
): Promise<{ agent: VmmAgentProcess; memoryDir: string }> {
  const memoryDir = join("/dev/shm", basename(root));
  const agent = await startVmmAgent(join(root, "home"), {
    ...guestEnv(artifacts),
    MSB_TEMPLATE_MEMORY_DIR: memoryDir,
    MSB_LOG_LEVEL: "info",
    ...env,
  });
  return { agent, memoryDir };
}

/**
 * What every file's `afterAll` does: stops the vmm-agent, asserts that nothing of ours is
 * left (no QEMU mentioning `root`; with `memoryDir`, no template RAM file) and removes them.
 */
export async function stopAndCheckClean(
  agent: VmmAgentProcess | undefined,
  root: string | undefined,
  memoryDir?: string,
): Promise<void> {
  await agent?.stop();
  if (root === undefined) return;
  expect(await qemuPidsMentioning(root)).toEqual([]);
  if (memoryDir !== undefined) expect(await readdir(memoryDir).catch(() => [])).toEqual([]);
  await rm(root, { recursive: true, force: true });
  if (memoryDir !== undefined) await rm(memoryDir, { recursive: true, force: true });
}

export interface VmmAgentProcess {
  readonly client: VmmServiceClient;
  readonly process: ChildProcess;
  readonly msbHome: string;
  /** Resolves with the exit code/signal once the process is gone. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Log lines (JSON) the process wrote so far. */
  readonly logs: string[];
  /** SIGTERM, then waits for the process to exit. */
  stop(): Promise<void>;
}

/**
 * Starts `node apps/vmm-agent/dist/main.js` the way an operator does, on a unix socket in
 * `msbHome`, and resolves once it logged that it listens.
 */
export async function startVmmAgent(
  msbHome: string,
  env: Record<string, string>,
): Promise<VmmAgentProcess> {
  const address = `unix:${join(msbHome, "run", "vmm-agent.sock")}`;
  const child = spawn(process.execPath, [AGENT_MAIN], {
    env: { ...process.env, MSB_HOME: msbHome, MSB_VMM_AGENT_ADDR: address, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const logs: string[] = [];
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  const listening = new Promise<void>((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    lines.on("line", (line) => {
      logs.push(line);
      if (line.includes('"vmm-agent listening"')) resolve();
    });
    child.stderr.on("data", (chunk: Buffer) => logs.push(chunk.toString()));
    void exited.then(({ code, signal }) =>
      reject(
        new Error(`vmm-agent exited (${code ?? signal}) before listening:\n${logs.join("\n")}`),
      ),
    );
  });
  await listening;
  const client = new VmmServiceClient(address, createGrpcChannelCredentials());
  return {
    client,
    process: child,
    msbHome,
    exited,
    logs,
    async stop() {
      client.close();
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      await exited;
    },
  };
}

const SERVICE = "vmm-agent";

/** Calls a unary method (deadline always set); errors come back as MsbError. */
export function unary<Req, Res>(
  client: VmmServiceClient,
  method: keyof VmmServiceClient,
  request: Req,
  timeoutMs = 120_000,
): Promise<Res> {
  const fn = (client[method] as (...args: unknown[]) => unknown).bind(client);
  return callUnary<Req, Res>(SERVICE, fn as never, request, { timeoutMs });
}

export interface Collected<R> {
  readonly stdout: string;
  readonly stderr: string;
  readonly result: R;
}

/** A guest environment with the usual PATH (the image sets none of its own). */
export const PATH_ENV: readonly string[] = ["PATH=/usr/local/bin:/usr/bin:/bin"];

/**
 * CreateVm of the e2e rootfs with the settings most tests share (256 MiB, 1 vCPU, no env,
 * volumes or ports, public network, 64 MiB disk quota); `fields` overrides any of them.
 */
export function createVm(
  client: VmmServiceClient,
  rootfsPath: string,
  vmId: string,
  fields: Record<string, unknown> = {},
): Promise<CreateVmResponse> {
  return unary(client, "createVm", {
    vmId,
    rootfsPath,
    imageReference: "e2e/bookworm-python-node",
    manifestDigest: "",
    memoryMib: 256,
    vcpus: 1,
    env: [],
    workdir: "",
    volumes: [],
    ports: [],
    network: NetworkMode.NETWORK_MODE_PUBLIC,
    diskQuotaBytes: 64 * 1024 * 1024,
    hostname: "",
    bootTimeoutMs: 0,
    keepDisk: false,
    ...fields,
  });
}

/** Host info (templates there have no event to wait on from outside: tests poll it). */
export function hostInfo(client: VmmServiceClient): Promise<GetHostInfoResponse> {
  return unary(client, "getHostInfo", {});
}

/** Runs a Python cell in the VM's REPL, asserts it succeeded, returns its stdout. */
export async function python(
  client: VmmServiceClient,
  vmId: string,
  code: string,
): Promise<string> {
  const r = await runCode(client, { vmId, language: "python", code });
  expect(r.result.status, r.stderr).toBe(RunStatus.RUN_STATUS_SUCCESS);
  return r.stdout;
}

/** The events of Exec and RunCode: output chunks, then one result. */
type OutputEvent<R> = {
  event: { $case: "output"; value: OutputChunk } | { $case: "result"; value: R } | undefined;
};

/** Reads an Exec or RunCode stream to its end: output by stream, and the result. */
async function collect<R>(
  what: string,
  call: Parameters<typeof readServerStream<OutputEvent<R>>>[1],
  onStdout?: (text: string) => void,
): Promise<Collected<R>> {
  let stdout = "";
  let stderr = "";
  let result: R | undefined;
  for await (const message of readServerStream<OutputEvent<R>>(SERVICE, call)) {
    const event = message.event;
    if (event?.$case === "output") {
      if (event.value.stream === OutputStream.OUTPUT_STREAM_STDERR)
        stderr += event.value.data.toString();
      else {
        stdout += event.value.data.toString();
        onStdout?.(event.value.data.toString());
      }
    } else if (event?.$case === "result") {
      result = event.value;
    }
  }
  if (result === undefined) throw new Error(`${what} ended without a result (stdout ${stdout})`);
  return { stdout, stderr, result };
}

/** Runs an Exec to its end and collects its output. */
export async function exec(
  client: VmmServiceClient,
  request: Partial<ExecRequest> & { vmId: string; command: string },
  timeoutMs = 180_000,
  onStdout?: (text: string) => void,
): Promise<Collected<ExecResult>> {
  const call = client.exec(ExecRequest.fromPartial(request), {
    deadline: new Date(Date.now() + timeoutMs),
  });
  return collect("Exec", call, onStdout);
}

/** Runs one REPL cell to its end and collects its output. */
export async function runCode(
  client: VmmServiceClient,
  request: Partial<RunCodeRequest> & { vmId: string; language: string; code: string },
  timeoutMs = 180_000,
): Promise<Collected<RunCodeResult>> {
  const call = client.runCode(RunCodeRequest.fromPartial(request), {
    deadline: new Date(Date.now() + timeoutMs),
  });
  return collect("RunCode", call);
}

/** The MsbError a promise rejects with (fails the test when it resolves). */
export async function rejection(promise: Promise<unknown>): Promise<MsbError> {
  try {
    await promise;
  } catch (err) {
    return err as MsbError;
  }
  throw new Error("expected the call to fail, but it succeeded");
}

/** Turns a raw gRPC error into an MsbError (for calls made without the helpers). */
export function asMsbError(err: unknown): MsbError {
  return fromServiceError(err, SERVICE);
}

/** pids of live qemu-system processes whose command line mentions `needle`. */
export async function qemuPidsMentioning(needle: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await readdir("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const cmdline = await readFile(`/proc/${entry}/cmdline`, "utf8").catch(() => "");
    if (cmdline.includes("qemu-system") && cmdline.includes(needle)) pids.push(Number(entry));
  }
  return pids;
}

/** Who a VM's QEMU runs as and whether seccomp confines it (`/proc/<pid>/status`). */
export async function qemuConfinement(
  pid: number,
): Promise<{ uid: string; gid: string; seccomp: string }> {
  const text = await readFile(`/proc/${pid}/status`, "utf8");
  const field = (name: string): string =>
    new RegExp(`^${name}:\\s*(\\S+)`, "m").exec(text)?.[1] ?? "";
  return { uid: field("Uid"), gid: field("Gid"), seccomp: field("Seccomp") };
}

/**
 * Waits until `check` holds, re-checking every 50 ms, failing after `timeoutMs`. Used only
 * for effects with no event to wait on (a process reaped by the kernel after PDEATHSIG).
 */
export async function eventually(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 15_000,
): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error(`timed out waiting for: ${what}`);
}
