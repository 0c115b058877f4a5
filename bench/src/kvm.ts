/**
 * KVM next to TCG on the same host, in the same run: create → first `print(1)` for a cold boot,
 * a template restore and a pool claim, and the Python `repl.run` round trip, each measured
 * with `MSB_ACCEL=kvm` and with `MSB_ACCEL=tcg` (fresh `msb server start --dev` stacks, as
 * bench/src/suite.ts does). Meant to run inside the nested L1 of tools/kvm-runner, where
 * only the ratios mean something: L1's KVM is emulated SVM under TCG, so absolute figures of
 * a real KVM host remain to be measured (docs/performance.md).
 *
 *   tools/kvm-runner/run.sh -- npx tsx bench/src/kvm.ts [--runs 3] [--paths pool,template,cold] [--out FILE]
 *
 * Prints one JSON object per scenario, then a table of medians and KVM/TCG ratios, and writes
 * everything to FILE (default bench/results/kvm-<time>.json).
 */
import { mkdir, writeFile } from "node:fs/promises";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { startMsbServer } from "@msb/testing";
import { createRpcClient } from "./suite/client.js";
import {
  MODE_ENV,
  Samples,
  replRoundTrip,
  startToFirstOutput,
  type ScenarioResult,
  type StartMode,
} from "./suite/scenarios.js";

type Accel = "kvm" | "tcg";

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
}

const RUNS = Number(arg("--runs") ?? process.env["MSB_KVM_BENCH_RUNS"] ?? 3);
/** Which start paths to measure (comma-separated); the first one's server also times the REPL. */
const PATHS = (arg("--paths") ?? "pool,template,cold").split(",") as StartMode[];
const TEMPLATE_WAIT_MS = 1_200_000;

/** One scenario under one accelerator; a scenario that throws is a result with no samples. */
async function measure(
  accel: Accel,
  mode: StartMode,
  withRepl: boolean,
): Promise<ScenarioResult[]> {
  console.error(`bench kvm: ${accel}, ${mode} server`);
  const server = await startMsbServer({
    env: { ...MODE_ENV[mode], MSB_ACCEL: accel, MSB_IDLE_PAUSE_SECONDS: "0" },
    homePrefix: `msb-bench-${accel}-`,
    readyTimeoutMs: 1_200_000,
  });
  const out: ScenarioResult[] = [];
  const guarded = async (name: string, run: () => Promise<ScenarioResult>) => {
    try {
      out.push(await run());
    } catch (err) {
      const s = new Samples();
      s.fail(err);
      out.push(s.result(name, accel));
    }
    console.log(JSON.stringify(out.at(-1)));
  };
  try {
    const rpc = createRpcClient(server.url);
    const reported = (await rpc.health()).accelerator;
    if (reported !== accel) throw new Error(`asked for ${accel}, the server runs ${reported}`);
    await guarded(`start_to_first_output.${mode}`, () =>
      startToFirstOutput(rpc, mode, accel, { n: RUNS, templateWaitMs: TEMPLATE_WAIT_MS }),
    );
    if (withRepl) {
      await guarded("repl_round_trip.python", () =>
        replRoundTrip(rpc, "python", accel, { n: RUNS * 5 }),
      );
    }
  } finally {
    await server.stop();
  }
  return out;
}

async function main(): Promise<number> {
  const out =
    arg("--out") ??
    join(
      fileURLToPath(new URL("../results", import.meta.url)),
      `kvm-${new Date().toISOString().replace(/[:.]/g, "-")}.json`,
    );
  const results: ScenarioResult[] = [];
  // Interleaved by path, so that a slow phase of the shared host hits both accelerators alike.
  for (const mode of PATHS) {
    for (const accel of ["kvm", "tcg"] as const) {
      results.push(...(await measure(accel, mode, mode === PATHS[0])));
    }
  }
  const median = (name: string, accel: Accel): number | null =>
    results.find((r) => r.name === name && r.accelerator === accel)?.median ?? null;
  const names = [...new Set(results.map((r) => r.name))];
  const ratios = names.map((name) => {
    const kvm = median(name, "kvm");
    const tcg = median(name, "tcg");
    return {
      name,
      kvm_median_ms: kvm,
      tcg_median_ms: tcg,
      kvm_over_tcg:
        kvm !== null && tcg !== null && tcg > 0 ? Math.round((kvm / tcg) * 100) / 100 : null,
    };
  });
  const document = {
    benchmark: "msb-kvm-vs-tcg",
    note: "KVM here is nested (emulated AMD SVM under TCG): compare ratios, not absolute figures.",
    runs: RUNS,
    cpus: cpus().length,
    finished_at: new Date().toISOString(),
    ratios,
    scenarios: results,
  };
  await mkdir(dirname(out), { recursive: true });
  await writeFile(out, `${JSON.stringify(document, null, 2)}\n`);
  const rows = ratios.map((r) => [
    r.name,
    String(r.kvm_median_ms ?? "-"),
    String(r.tcg_median_ms ?? "-"),
    String(r.kvm_over_tcg ?? "-"),
  ]);
  const head = ["scenario", "kvm median ms", "tcg median ms", "kvm/tcg"];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const row of [head, ...rows]) {
    console.log(
      row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  "),
    );
  }
  console.log(`results: ${out}`);
  return results.some((r) => r.n === 0) ? 1 : 0;
}

process.exitCode = await main();
