// `npm run bench:smoke` end to end: the benchmark suite starts its own real servers and VMs,
// and must finish with every scenario measured and valid JSON on stdout and in its results
// file. Figures are never asserted (speed is for docs/performance.md, not for tests).
import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { tempDir, type TempDir } from "@msb/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

const REPO = fileURLToPath(new URL("../../../", import.meta.url));

const SMOKE_SCENARIOS = [
  "start_to_first_output.pool",
  "repl_round_trip.python",
  "repl_round_trip.node",
  "command_true",
  "concurrent_start.2",
  "sustained_starts",
  "start_to_first_output.template",
  "start_to_first_output.cold",
];

interface Scenario {
  name: string;
  accelerator: string;
  n: number;
  unit: string;
  min: number;
  median: number;
  p95: number;
  max: number;
  errors: Record<string, number>;
  start_kinds?: Record<string, number>;
  [extra: string]: unknown;
}

let dir: TempDir;
let run: { code: number; stdout: string; stderr: string };
let document: { smoke: boolean; accelerator: string; scenarios: Scenario[] };

beforeAll(async () => {
  dir = await tempDir("msb-bench-smoke-");
  const out = `${dir.path}/results.json`;
  run = await new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", "bench/src/suite.ts", "--smoke", "--out", out],
      { cwd: REPO, timeout: 1_200_000, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === "number" ? err.code : 1;
        resolve({ code, stdout, stderr });
      },
    );
  });
  document = JSON.parse(await readFile(out, "utf8")) as typeof document;
}, 1_300_000);

afterAll(async () => {
  await dir.remove();
});

describe("npm run bench:smoke", () => {
  it("finishes with every scenario measured", () => {
    expect(run.code, run.stderr.slice(-3000)).toBe(0);
    expect(document.smoke).toBe(true);
    expect(document.scenarios.map((s) => s.name)).toEqual(SMOKE_SCENARIOS);
    for (const s of document.scenarios) {
      expect(s.n, `${s.name}: ${JSON.stringify(s.errors)}`).toBeGreaterThan(0);
      expect(s.unit).toBe("ms");
      expect(["kvm", "tcg", "hvf"]).toContain(s.accelerator);
      expect(s.min).toBeLessThanOrEqual(s.median);
      expect(s.median).toBeLessThanOrEqual(s.p95);
      expect(s.p95).toBeLessThanOrEqual(s.max);
    }
  });

  it("prints each scenario as one JSON line, then a table", () => {
    const lines = run.stdout
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as Scenario);
    expect(lines.map((l) => l.name)).toEqual(SMOKE_SCENARIOS);
    expect(run.stdout).toMatch(/^scenario +n +min +median +p95 +max +notes$/m);
  });

  it("reports the start kind the server observed for every start", () => {
    for (const s of document.scenarios.filter((x) => x.start_kinds !== undefined)) {
      const kinds = s.start_kinds!;
      expect(
        Object.values(kinds).reduce((a, b) => a + b, 0),
        s.name,
      ).toBe(s.n);
      for (const k of Object.keys(kinds)) expect(["cold", "template", "pool"]).toContain(k);
    }
    // MSB_TEMPLATES=0 means no snapshot is ever used.
    const cold = document.scenarios.find((s) => s.name === "start_to_first_output.cold")!;
    expect(Object.keys(cold.start_kinds!)).toEqual(["cold"]);
  });

  it("measures host memory and CPU of the concurrent sandboxes", () => {
    const c = document.scenarios.find((s) => s.name === "concurrent_start.2")!;
    expect(c["ready"]).toBe(2);
    expect(c["qemu_processes"]).toBeGreaterThanOrEqual(2);
    expect(c["rss_per_sandbox_mib"]).toBeGreaterThan(0);
    expect(c["pss_per_sandbox_mib"]).toBeGreaterThan(0);
    expect(typeof c["cpu_per_idle_sandbox_percent"]).toBe("number");
  });
});
