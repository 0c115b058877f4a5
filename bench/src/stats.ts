/** Summary statistics and output shared by the benchmarks: JSON for scripts, a table for people. */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

export interface Summary {
  readonly n: number;
  readonly min: number;
  readonly median: number;
  readonly p95: number;
  readonly max: number;
}

function quantile(sorted: readonly number[], q: number): number {
  const pos = (sorted.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

/** min / median / p95 / max of the samples (rounded to 0.1). */
export function summarize(samples: readonly number[]): Summary {
  if (samples.length === 0) throw new Error("no samples");
  const s = [...samples].sort((a, b) => a - b);
  const r = (v: number): number => Math.round(v * 10) / 10;
  return {
    n: s.length,
    min: r(s[0]!),
    median: r(quantile(s, 0.5)),
    p95: r(quantile(s, 0.95)),
    max: r(s[s.length - 1]!),
  };
}

/** Prints a table of summaries (ms) to stdout, then the whole result as one JSON line, and
 *  keeps a copy under bench/results/<name>-<time>.json. */
export async function report(
  name: string,
  meta: Record<string, unknown>,
  rows: Record<string, Summary>,
): Promise<void> {
  const width = Math.max(...Object.keys(rows).map((k) => k.length), 8);
  console.log(
    `${name} — ${Object.entries(meta)
      .map(([k, v]) => `${k}: ${String(v)}`)
      .join(", ")}`,
  );
  console.log(
    `${"scenario".padEnd(width)}  ${["n", "min", "median", "p95", "max"].map((h) => h.padStart(8)).join("")}`,
  );
  for (const [k, v] of Object.entries(rows)) {
    const cells = [v.n, v.min, v.median, v.p95, v.max].map((x) => String(x).padStart(8)).join("");
    console.log(`${k.padEnd(width)}  ${cells}`);
  }
  const result = { benchmark: name, ...meta, unit: "ms", scenarios: rows };
  console.log(JSON.stringify(result));
  const dir = fileURLToPath(new URL("../results", import.meta.url));
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, `${name}-${Date.now()}.json`), JSON.stringify(result, null, 2));
}
