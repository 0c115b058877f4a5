import { execFile, spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort } from "@msb/testing";
import { createControlPlaneClient } from "@msb/wire";

/** From @msb/testing; re-exported because every server test starts from this harness. */
export { freePort };

/** The built CLI, run the way a user runs it. */
export const MSB = fileURLToPath(new URL("../../../apps/msb/dist/main.js", import.meta.url));

export interface MsbResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs `msb ARGS` to completion against `home`. */
export function msb(
  home: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
): Promise<MsbResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [MSB, "--home", home, ...args],
      { env: { ...process.env, ...env }, timeout: 600_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === "number" ? err.code : 1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

/** A foreground `msb server start`: the child process and its output so far. */
export interface ForegroundServer {
  readonly child: ChildProcess;
  readonly output: { stdout: string; stderr: string };
  /** Resolves with the parsed `--json` ready document, or rejects if the process exits first. */
  readonly ready: Promise<Record<string, unknown>>;
  readonly exited: Promise<number | null>;
}

export function startForeground(
  home: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = {},
): ForegroundServer {
  const child = spawn(
    process.execPath,
    [MSB, "--home", home, "--json", "server", "start", ...args],
    {
      env: { ...process.env, ...env },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  const output = { stdout: "", stderr: "" };
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code) => resolve(code)),
  );
  const ready = new Promise<Record<string, unknown>>((resolve, reject) => {
    child.stdout.on("data", (chunk: Buffer) => {
      output.stdout += chunk.toString();
      // --json prints one pretty-printed document once the server is ready.
      try {
        resolve(JSON.parse(output.stdout) as Record<string, unknown>);
      } catch {
        // Not complete yet.
      }
    });
    child.stderr.on("data", (chunk: Buffer) => {
      output.stderr += chunk.toString();
    });
    void exited.then((code) =>
      reject(new Error(`msb server start exited with ${code}: ${output.stderr}`)),
    );
  });
  ready.catch(() => undefined);
  return { child, output, ready, exited };
}

/**
 * `msb server start --dev` (plus `args`) on a free loopback port, in the foreground, as most
 * e2e files start it; resolves once the server is ready, with its URL.
 */
export async function startDevServer(
  home: string,
  args: readonly string[] = [],
  env: NodeJS.ProcessEnv = {},
): Promise<{ server: ForegroundServer; url: string }> {
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const server = startForeground(home, ["--dev", "--port", String(port), ...args], env);
  await server.ready;
  return { server, url };
}

/** SIGTERM to a foreground server, then waits until it has exited. */
export async function stopForeground(server: ForegroundServer): Promise<void> {
  server.child.kill("SIGTERM");
  await server.exited;
}

export function tempHome(): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), "msb-e2e-server-"));
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** Polls until `check` is truthy; for processes, which offer nothing to await. */
export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 60_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** `/proc/<pid>/stat` state, or undefined when the process is gone; zombies count as gone. */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3);
    return state !== "Z" && state !== "X";
  } catch {
    return false;
  }
}

export function startTimeOf(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? "";
}

export interface LockFile {
  pid: number;
  startTime: string;
  url: string;
  services: Record<string, { pid: number; startTime: string }>;
}

export function readLock(home: string): LockFile {
  return JSON.parse(readFileSync(join(home, "run", "server.lock"), "utf8")) as LockFile;
}

/** Every live process whose command line or environment holds `needle`. */
export function processesMentioning(needle: string): { pid: number; where: string }[] {
  const hits: { pid: number; where: string }[] = [];
  for (const name of readdirSync("/proc").filter((n) => /^\d+$/.test(n))) {
    if (Number(name) === process.pid) continue;
    for (const where of ["cmdline"]) {
      try {
        if (readFileSync(`/proc/${name}/${where}`, "utf8").includes(needle))
          hits.push({ pid: Number(name), where });
      } catch {
        // Gone or not ours.
      }
    }
  }
  return hits;
}

export async function rpc(
  url: string,
  method: string,
  params: unknown,
  key?: string,
): Promise<{ status: number; body: Record<string, unknown> }> {
  const client = createControlPlaneClient({
    url,
    timeoutMs: 600_000,
    ...(key === undefined ? {} : { apiKey: key }),
  });
  const { status, body } = await client.answer(method, params);
  if (body === undefined) throw new Error(`${method}: HTTP ${status} without a JSON-RPC body`);
  return { status, body };
}
