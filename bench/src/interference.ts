/**
 * Noisy neighbour: how much one sandbox's CPU hog slows another sandbox's REPL. Starts
 * `msb server start --dev` on a free port with a temporary MSB_HOME and two Python sandboxes,
 * then measures repl.run('sum(range(1000))') in "quiet" while "noisy" is idle, and again while
 * "noisy" runs `while :; do :; done` (one busy vCPU per hog; `--hogs N` runs N of them, each in
 * its own sandbox). The target is a median under load at most 2× the idle one. Prints a table
 * (min/median/p95/max, ms) and one JSON line with the ratio; names the accelerator.
 *
 *   npm run build && npx tsx bench/src/interference.ts [--runs 20] [--hogs 1]
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { report, summarize } from "./stats.js";
import { createRpcClient } from "./suite/client.js";

const MSB = fileURLToPath(new URL("../../apps/msb/dist/main.js", import.meta.url));

function arg(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
}
const RUNS = arg("--runs", 20);
const HOGS = arg("--hogs", 1);

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const a = srv.address();
      srv.close(() => resolve(typeof a === "object" && a !== null ? a.port : 0));
    });
  });
}

function msb(home: string, args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MSB, "--home", home, ...args], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let out = "";
    child.stdout.on("data", (d: Buffer) => (out += d.toString()));
    child.once("exit", (code) => resolve({ code, out }));
  });
}

async function main(): Promise<void> {
  const home = await mkdtemp(join(tmpdir(), "msb-bench-"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const started = await msb(home, [
    "--json",
    "server",
    "start",
    "--dev",
    "--detach",
    "--port",
    String(port),
  ]);
  if (started.code !== 0) throw new Error(`msb server start failed (${started.code})`);
  // The one wire client; a JSON-RPC error is an MsbError carrying the server's code.
  const client = createRpcClient(url);
  const rpc = (method: string, params: Record<string, unknown>) => client.call(method, params);
  const sample = async (n: number): Promise<number[]> => {
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const t0 = performance.now();
      await rpc("sandbox.repl.run", {
        sandbox: "quiet",
        language: "python",
        code: "sum(range(1000))",
      });
      out.push(performance.now() - t0);
    }
    return out;
  };
  try {
    const health = (await (await fetch(`${url}/api/v1/health`)).json()) as { accelerator?: string };
    const accelerator = health.accelerator ?? "unknown";
    const config = { image: "microsandbox/python", memory: 256 };
    const noisy = Array.from({ length: HOGS }, (_, i) => `noisy-${i}`);
    for (const sandbox of ["quiet", ...noisy]) {
      await rpc("sandbox.start", { sandbox, config });
      await rpc("sandbox.repl.run", { sandbox, language: "python", code: "1" });
    }
    const idle = await sample(RUNS);
    // Each hog runs until its timeout, longer than the sampling below can take.
    const hogSeconds = Math.max(60, RUNS * 5);
    const hogs = noisy.map((sandbox) =>
      rpc("sandbox.command.run", {
        sandbox,
        command: "sh",
        args: ["-c", "while :; do :; done"],
        timeout: hogSeconds,
      }).then(
        () => undefined,
        // Ended by its timeout, or by the stop below: both are the expected end of a hog.
        // Anything else is kept, not thrown here: an unhandled rejection would skip the
        // `finally` below and leave the server running.
        (err: Error & { code?: string }) =>
          ["TIMEOUT", "SANDBOX_STOPPED", "VM_DIED"].includes(err.code ?? "") ? undefined : err,
      ),
    );
    // Let the hogs reach their guests before measuring; nothing to await from outside.
    await new Promise((resolve) => setTimeout(resolve, 2_000));
    const loaded = await sample(RUNS);
    for (const sandbox of noisy) await rpc("sandbox.stop", { sandbox });
    const hogError = (await Promise.all(hogs)).find((e) => e !== undefined);
    if (hogError !== undefined) throw hogError;
    await rpc("sandbox.stop", { sandbox: "quiet" });

    const idleS = summarize(idle);
    const loadedS = summarize(loaded);
    const ratio = Math.round((loadedS.median / idleS.median) * 100) / 100;
    await report(
      "interference",
      {
        accelerator,
        runs: RUNS,
        hogs: HOGS,
        image: "microsandbox/python",
        memoryMib: 256,
        medianRatio: ratio,
        target: "medianRatio <= 2",
      },
      {
        "repl.run, neighbour idle": idleS,
        [`repl.run, ${HOGS} neighbour CPU hog(s)`]: loadedS,
      },
    );
  } finally {
    await msb(home, ["server", "stop"]);
    await rm(home, { recursive: true, force: true });
  }
}

await main();
