/**
 * msb's benchmark suite, through the public HTTP API of real `msb server start --dev` stacks
 * that it starts itself (fresh MSB_HOME each, images from the build cache), with real VMs:
 *
 *   1. create → first repl.run('print(1)') result: cold (MSB_TEMPLATES=0), template restore
 *      (MSB_POOL_SIZE=0), warm pool (defaults); each sample's start kind as the server reports it
 *   2. repl.run round trip in a running sandbox, Python and Node
 *   3. command.run('true') round trip
 *   4. N sandboxes started at once: time to ready, host RSS/PSS and idle CPU per sandbox
 *   5. sustained start → first output → stop cycles per second, 2 at a time
 *
 * Prints one JSON object per scenario as it finishes, then a table, and writes everything to
 * bench/results/suite-<time>.json (or --out FILE). docs/performance.md explains the figures.
 *
 *   npm run build && npx tsx bench/src/suite.ts [--smoke] [--out FILE]
 */
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, loadavg, totalmem } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startMsbServer, type MsbServer } from "@msb/testing";
import { createRpcClient } from "./suite/client.js";
import {
  MODE_ENV,
  Samples,
  commandTrue,
  concurrentStart,
  replRoundTrip,
  startToFirstOutput,
  sustainedStarts,
  type ScenarioResult,
  type StartMode,
} from "./suite/scenarios.js";

interface Plan {
  readonly firstOutputN: number;
  readonly roundTripN: number;
  readonly concurrent: readonly number[];
  readonly idleWindowMs: number;
  readonly settleMs: number;
  readonly sustainedMs: number;
  readonly templateWaitMs: number;
}

const FULL: Plan = {
  firstOutputN: 10,
  roundTripN: 30,
  concurrent: [10, 50],
  idleWindowMs: 10_000,
  settleMs: 5_000,
  sustainedMs: 60_000,
  templateWaitMs: 180_000,
};

const SMOKE: Plan = {
  firstOutputN: 2,
  roundTripN: 3,
  concurrent: [2],
  idleWindowMs: 2_000,
  settleMs: 1_000,
  sustainedMs: 8_000,
  templateWaitMs: 30_000,
};

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

function table(results: readonly ScenarioResult[]): string {
  const cell = (v: unknown): string =>
    v === null || v === undefined
      ? "-"
      : typeof v === "number" || typeof v === "string"
        ? String(v)
        : JSON.stringify(v);
  const rows = results.map((r) => {
    const notes = [
      r["start_kinds"] === undefined ? "" : `kinds ${JSON.stringify(r["start_kinds"])}`,
      Object.keys(r.errors).length === 0 ? "" : `errors ${JSON.stringify(r.errors)}`,
      r["starts_per_second"] === undefined ? "" : `${cell(r["starts_per_second"])} starts/s`,
      r["rss_per_sandbox_mib"] === undefined
        ? ""
        : `RSS ${cell(r["rss_per_sandbox_mib"])} / PSS ${cell(r["pss_per_sandbox_mib"])} MiB, CPU ${cell(r["cpu_per_idle_sandbox_percent"])} % per sandbox`,
    ].filter((x) => x !== "");
    return [
      r.name,
      cell(r.n),
      cell(r.min),
      cell(r.median),
      cell(r.p95),
      cell(r.max),
      notes.join("; "),
    ];
  });
  const head = ["scenario", "n", "min", "median", "p95", "max", "notes"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === 0 || i === 6 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(head), ...rows.map(line)].join("\n");
}

async function main(): Promise<number> {
  const smoke = process.argv.includes("--smoke");
  const plan = smoke ? SMOKE : FULL;
  const out =
    arg("--out") ??
    join(
      fileURLToPath(new URL("../results", import.meta.url)),
      `suite-${new Date().toISOString().replace(/[:.]/g, "-")}.json`,
    );
  const startedAt = new Date().toISOString();
  const loadStart = loadavg();
  const results: ScenarioResult[] = [];
  let accelerator = "unknown";
  const emit = (r: ScenarioResult) => {
    results.push(r);
    console.log(JSON.stringify(r));
  };
  const servers = new Set<MsbServer>();
  const stopAll = () => Promise.all([...servers].map((s) => s.stop()));
  const onSignal = () => {
    void stopAll().finally(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  /** Runs `body` against a fresh server for `mode`; a scenario that throws is reported, not fatal. */
  const withServer = async (mode: StartMode, body: (server: MsbServer) => Promise<void>) => {
    console.error(`bench: starting a server (${mode}: ${JSON.stringify(MODE_ENV[mode])})`);
    const server = await startMsbServer({ env: MODE_ENV[mode], homePrefix: "msb-bench-" });
    servers.add(server);
    try {
      accelerator = (await createRpcClient(server.url).health()).accelerator ?? "unknown";
      await body(server);
    } finally {
      await server.stop();
      servers.delete(server);
    }
  };
  const guarded = async (name: string, run: () => Promise<ScenarioResult>) => {
    console.error(`bench: ${name}`);
    try {
      emit(await run());
    } catch (err) {
      const s = new Samples();
      s.fail(err);
      emit(s.result(name, accelerator));
    }
  };

  try {
    await withServer("pool", async (server) => {
      const rpc = createRpcClient(server.url);
      await guarded("start_to_first_output.pool", () =>
        startToFirstOutput(rpc, "pool", accelerator, {
          n: plan.firstOutputN,
          templateWaitMs: plan.templateWaitMs,
        }),
      );
      for (const language of ["python", "node"] as const) {
        await guarded(`repl_round_trip.${language}`, () =>
          replRoundTrip(rpc, language, accelerator, { n: plan.roundTripN }),
        );
      }
      await guarded("command_true", () => commandTrue(rpc, accelerator, { n: plan.roundTripN }));
      for (const n of plan.concurrent) {
        await guarded(`concurrent_start.${n}`, () =>
          concurrentStart(rpc, server, accelerator, {
            n,
            idleWindowMs: plan.idleWindowMs,
            settleMs: plan.settleMs,
          }),
        );
      }
      await guarded("sustained_starts", () =>
        sustainedStarts(rpc, accelerator, { durationMs: plan.sustainedMs, concurrency: 2 }),
      );
    });
    for (const mode of ["template", "cold"] as const) {
      await withServer(mode, (server) =>
        guarded(`start_to_first_output.${mode}`, () =>
          startToFirstOutput(createRpcClient(server.url), mode, accelerator, {
            n: plan.firstOutputN,
            templateWaitMs: plan.templateWaitMs,
          }),
        ),
      );
    }
  } finally {
    await stopAll();
  }

  const document = {
    benchmark: "msb-suite",
    smoke,
    accelerator,
    started_at: startedAt,
    finished_at: new Date().toISOString(),
    host: {
      cpus: cpus().length,
      memory_total_mib: Math.round(totalmem() / 1024 / 1024),
      load_average_start: loadStart.map((l) => Math.round(l * 100) / 100),
      load_average_end: loadavg().map((l) => Math.round(l * 100) / 100),
    },
    plan,
    scenarios: results,
  };
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, `${JSON.stringify(document, null, 2)}\n`);
  console.log(
    `\nmsb bench${smoke ? " (smoke)" : ""} — accelerator ${accelerator}, ${cpus().length} CPUs, load ${document.host.load_average_start.join(" ")} → ${document.host.load_average_end.join(" ")}; ms`,
  );
  console.log(table(results));
  console.log(`results: ${out}`);
  // Exit 1 when a scenario measured nothing: the suite ran, but something is broken.
  return results.some((r) => r.n === 0) ? 1 : 0;
}

process.exitCode = await main();
