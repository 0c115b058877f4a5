/**
 * End-to-end benchmark through the public HTTP API, the way a client sees msb: starts
 * `msb server start --dev` on a free port with a temporary MSB_HOME, then measures
 *   - sandbox.start (cold boot) and start → first repl.run('print(1)') result,
 *   - repl.run('print(1)') round trip in a running Python sandbox,
 *   - command.run('true') round trip.
 * Prints a table (min/median/p95/max, ms) and one JSON line; names the accelerator.
 *
 *   npm run build && npx tsx bench/src/http.ts [--runs 10]
 */
import { spawn } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { report, summarize } from "./stats.js";

const MSB = fileURLToPath(new URL("../../apps/msb/dist/main.js", import.meta.url));
const runsArg = process.argv.indexOf("--runs");
const RUNS = runsArg > 0 ? Number(process.argv[runsArg + 1]) : 10;

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
  let id = 0;
  const rpc = async (method: string, params: unknown): Promise<unknown> => {
    const res = await fetch(`${url}/api/v1/rpc`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", method, params, id: ++id }),
    });
    const body = (await res.json()) as { result?: unknown; error?: { message: string } };
    if (body.error) throw new Error(`${method}: ${body.error.message}`);
    return body.result;
  };
  const timed = async (fn: () => Promise<unknown>): Promise<number> => {
    const t0 = performance.now();
    await fn();
    return performance.now() - t0;
  };
  try {
    const health = (await (await fetch(`${url}/api/v1/health`)).json()) as { accelerator?: string };
    const accelerator = health.accelerator ?? "unknown";
    const config = { image: "microsandbox/python", memory: 512 };
    // Warm-up: the first start in a new MSB_HOME prepares the rootfs; not what is measured.
    await rpc("sandbox.start", { sandbox: "warmup", config });
    await rpc("sandbox.stop", { sandbox: "warmup" });

    const start: number[] = [];
    const startToFirst: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      const sandbox = `cold-${i}`;
      const t0 = performance.now();
      await rpc("sandbox.start", { sandbox, config });
      start.push(performance.now() - t0);
      await rpc("sandbox.repl.run", { sandbox, language: "python", code: "print(1)" });
      startToFirst.push(performance.now() - t0);
      await rpc("sandbox.stop", { sandbox });
      console.error(
        `cold ${i + 1}/${RUNS}: start→first output ${Math.round(startToFirst.at(-1)!)} ms`,
      );
    }

    await rpc("sandbox.start", { sandbox: "warm", config });
    await rpc("sandbox.repl.run", { sandbox: "warm", language: "python", code: "1" });
    await rpc("sandbox.command.run", { sandbox: "warm", command: "true" });
    const repl: number[] = [];
    const cmd: number[] = [];
    for (let i = 0; i < Math.max(RUNS, 20); i++) {
      repl.push(
        await timed(() =>
          rpc("sandbox.repl.run", { sandbox: "warm", language: "python", code: "print(1)" }),
        ),
      );
      cmd.push(await timed(() => rpc("sandbox.command.run", { sandbox: "warm", command: "true" })));
    }
    await rpc("sandbox.stop", { sandbox: "warm" });

    await report(
      "http",
      { accelerator, runs: RUNS, image: "microsandbox/python", memoryMib: 512 },
      {
        "sandbox.start (cold boot)": summarize(start),
        "start → first repl.run result": summarize(startToFirst),
        "repl.run print(1), warm": summarize(repl),
        "command.run true, warm": summarize(cmd),
      },
    );
  } finally {
    await msb(home, ["server", "stop"]);
    await rm(home, { recursive: true, force: true });
  }
}

await main();
