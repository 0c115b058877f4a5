import { MsbError } from "@msb/errors";
import type { MsbServer } from "@msb/testing";
import { summarize, type Summary } from "../stats.js";
import {
  codeOf,
  type CommandResult,
  type Health,
  type RpcClient,
  type RunResult,
  type StartDetails,
} from "./client.js";
import { measureQemuCost } from "./host.js";

/** How a server of the suite is set up: the vmm agent's template and warm-pool knobs. */
export type StartMode = "cold" | "template" | "pool";

/** The environment that gives each start mode (unknown knobs are ignored by older servers). */
export const MODE_ENV: Readonly<Record<StartMode, Readonly<Record<string, string>>>> = {
  cold: { MSB_TEMPLATES: "0" },
  template: { MSB_POOL_SIZE: "0" },
  pool: {},
};

/** One scenario's figures: what `npm run bench` prints as JSON and keeps in the results file. */
export interface ScenarioResult {
  readonly name: string;
  readonly accelerator: string;
  /** Successful samples. */
  readonly n: number;
  readonly unit: "ms";
  readonly min: number | null;
  readonly median: number | null;
  readonly p95: number | null;
  readonly max: number | null;
  /** Failed samples by error code (capacity limits included: they are results, not noise). */
  readonly errors: Readonly<Record<string, number>>;
  /** The first failure's message, when there was one. */
  readonly first_error?: string;
  readonly [extra: string]: unknown;
}

export const PYTHON = "microsandbox/python";
export const NODE = "microsandbox/node";

/** Collects samples and failures of one scenario. */
export class Samples {
  readonly values: number[] = [];
  readonly errors: Record<string, number> = {};
  firstError: string | undefined;

  fail(err: unknown): void {
    const code = codeOf(err);
    this.errors[code] = (this.errors[code] ?? 0) + 1;
    this.firstError ??= err instanceof Error ? err.message : String(err);
  }

  result(name: string, accelerator: string, extra: Record<string, unknown> = {}): ScenarioResult {
    const s = this.values.length > 0 ? summarize(this.values) : undefined;
    return {
      name,
      accelerator,
      n: this.values.length,
      unit: "ms",
      min: s?.min ?? null,
      median: s?.median ?? null,
      p95: s?.p95 ?? null,
      max: s?.max ?? null,
      errors: this.errors,
      ...(this.firstError === undefined ? {} : { first_error: this.firstError }),
      ...extra,
    };
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const summaryOf = (values: number[]): Summary | null =>
  values.length > 0 ? summarize(values) : null;
const countBy = (values: readonly string[]) =>
  values.reduce<Record<string, number>>((acc, v) => ({ ...acc, [v]: (acc[v] ?? 0) + 1 }), {});

function stdoutOf(result: RunResult): string {
  return result.output
    .filter((o) => o.stream === "stdout")
    .map((o) => o.text)
    .join("\n");
}

/** Runs a cell and checks that it printed what it should: a wrong answer is a failed sample. */
async function runExpecting(
  rpc: RpcClient,
  sandbox: string,
  language: "python" | "node",
  code: string,
  expected: string,
): Promise<void> {
  const r = await rpc.call<RunResult>("sandbox.repl.run", { sandbox, language, code });
  if (r.status !== "success" || stdoutOf(r).trim() !== expected) {
    throw new MsbError(
      "INTERNAL",
      `repl.run in ${sandbox} answered ${r.status} with ${JSON.stringify(stdoutOf(r))}, expected ${expected}.`,
    );
  }
}

async function startDetailed(
  rpc: RpcClient,
  sandbox: string,
  image: string,
): Promise<StartDetails> {
  const r = await rpc.call<StartDetails | string>("sandbox.start", {
    sandbox,
    config: { image },
    details: true,
  });
  // A server without `details` answers the sentence: start kind unknown, not assumed.
  return typeof r === "string" ? { message: r, start_kind: null, boot_ms: null } : r;
}

async function stopQuietly(rpc: RpcClient, sandbox: string): Promise<void> {
  try {
    await rpc.call("sandbox.stop", { sandbox });
  } catch {
    // Best effort: the server is stopped at the end anyway.
  }
}

/** What health says about the templates of `image`, waited for as the options say. */
export interface TemplateWait {
  /** "none" (no template reported), "ready", "building", "failed". */
  readonly state: string;
  readonly waitedMs: number;
  readonly poolReady: number;
  readonly poolTarget: number;
  readonly reason?: string;
}

/**
 * Waits (up to `timeoutMs`) until the vmm agent's template for `image` is ready and, with
 * `needPool`, its pool holds a VM. A server that reports no template within `graceMs` is
 * taken at its word (templates off or not implemented): nothing to wait for.
 */
export async function waitForTemplate(
  rpc: RpcClient,
  image: string,
  options: { readonly needPool: boolean; readonly timeoutMs: number; readonly graceMs: number },
): Promise<TemplateWait> {
  const t0 = performance.now();
  for (;;) {
    const waitedMs = Math.round(performance.now() - t0);
    const templates = (await rpc.health()).services?.vmm?.templates ?? [];
    const mine = templates.filter((t) => t.image.includes(image));
    const poolReady = mine.reduce((s, t) => s + t.pool_ready, 0);
    const poolTarget = mine.reduce((s, t) => s + t.pool_target, 0);
    const failed = mine.find((t) => t.state === "failed");
    const ready = mine.some((t) => t.state === "ready");
    if (mine.length === 0 && waitedMs >= options.graceMs) {
      return { state: "none", waitedMs, poolReady, poolTarget };
    }
    if (failed !== undefined && !ready) {
      return { state: "failed", waitedMs, poolReady, poolTarget, reason: failed.reason };
    }
    if (ready && (!options.needPool || poolTarget === 0 || poolReady > 0)) {
      return { state: "ready", waitedMs, poolReady, poolTarget };
    }
    if (waitedMs >= options.timeoutMs) {
      return { state: ready ? "ready" : "building", waitedMs, poolReady, poolTarget };
    }
    await sleep(500);
  }
}

const startsOf = (h: Health) => h.services?.vmm?.starts ?? null;

/**
 * Scenario 1: create → first `repl.run('print(1)')` result, on a server set up for `mode`.
 * Each sample's start kind is the one the server reported, never the mode's name.
 */
export async function startToFirstOutput(
  rpc: RpcClient,
  mode: StartMode,
  accelerator: string,
  options: { readonly n: number; readonly templateWaitMs: number },
): Promise<ScenarioResult> {
  // The first start in a fresh MSB_HOME prepares the rootfs (and may build the template).
  await startDetailed(rpc, `warm-${mode}`, PYTHON);
  await stopQuietly(rpc, `warm-${mode}`);
  const template = await waitForTemplate(rpc, PYTHON, {
    needPool: mode === "pool",
    timeoutMs: options.templateWaitMs,
    graceMs: 3_000,
  });

  const samples = new Samples();
  const startMs: number[] = [];
  const bootMs: number[] = [];
  const kinds: string[] = [];
  const poolWaitMs: number[] = [];
  for (let i = 0; i < options.n; i++) {
    if (mode === "pool" && template.state === "ready" && template.poolTarget > 0) {
      // Measure a start from a filled pool, as a user sees it between bursts.
      const w = await waitForTemplate(rpc, PYTHON, {
        needPool: true,
        timeoutMs: 60_000,
        graceMs: 0,
      });
      poolWaitMs.push(w.waitedMs);
    }
    const sandbox = `first-${mode}-${i}`;
    try {
      const t0 = performance.now();
      const started = await startDetailed(rpc, sandbox, PYTHON);
      const t1 = performance.now();
      await runExpecting(rpc, sandbox, "python", "print(1)", "1");
      samples.values.push(performance.now() - t0);
      startMs.push(t1 - t0);
      kinds.push(started.start_kind ?? "unknown");
      if (started.boot_ms !== null) bootMs.push(started.boot_ms);
    } catch (err) {
      samples.fail(err);
    } finally {
      await stopQuietly(rpc, sandbox);
    }
  }
  return samples.result(`start_to_first_output.${mode}`, accelerator, {
    mode,
    server_env: MODE_ENV[mode],
    start_kinds: countBy(kinds),
    start_ms: summaryOf(startMs),
    boot_ms: summaryOf(bootMs),
    template: template.state,
    template_wait_ms: template.waitedMs,
    ...(poolWaitMs.length > 0 ? { pool_refill_wait_ms: summaryOf(poolWaitMs) } : {}),
    starts_counters: startsOf(await rpc.health()),
  });
}

/** Scenario 2: `repl.run` round trip in a running sandbox (state kept between calls). */
export async function replRoundTrip(
  rpc: RpcClient,
  language: "python" | "node",
  accelerator: string,
  options: { readonly n: number },
): Promise<ScenarioResult> {
  const sandbox = `repl-${language}`;
  const samples = new Samples();
  try {
    await startDetailed(rpc, sandbox, language === "python" ? PYTHON : NODE);
    const code = language === "python" ? "print(1)" : "console.log(1)";
    // The first cell starts the interpreter: not what is measured.
    await runExpecting(rpc, sandbox, language, code, "1");
    for (let i = 0; i < options.n; i++) {
      const t0 = performance.now();
      try {
        await runExpecting(rpc, sandbox, language, code, "1");
        samples.values.push(performance.now() - t0);
      } catch (err) {
        samples.fail(err);
      }
    }
  } catch (err) {
    samples.fail(err);
  } finally {
    await stopQuietly(rpc, sandbox);
  }
  return samples.result(`repl_round_trip.${language}`, accelerator, { language });
}

/** Scenario 3: `command.run('true')` round trip in a running sandbox. */
export async function commandTrue(
  rpc: RpcClient,
  accelerator: string,
  options: { readonly n: number },
): Promise<ScenarioResult> {
  const sandbox = "command";
  const samples = new Samples();
  try {
    await startDetailed(rpc, sandbox, PYTHON);
    await rpc.call<CommandResult>("sandbox.command.run", { sandbox, command: "true" });
    for (let i = 0; i < options.n; i++) {
      const t0 = performance.now();
      try {
        const r = await rpc.call<CommandResult>("sandbox.command.run", {
          sandbox,
          command: "true",
        });
        if (r.exit_code !== 0) {
          throw new MsbError("INTERNAL", `command.run true exited with ${r.exit_code}.`);
        }
        samples.values.push(performance.now() - t0);
      } catch (err) {
        samples.fail(err);
      }
    }
  } catch (err) {
    samples.fail(err);
  } finally {
    await stopQuietly(rpc, sandbox);
  }
  return samples.result("command_true", accelerator);
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>) {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/**
 * Scenario 4: N sandboxes started at once with the product's default memory. Samples are each
 * sandbox's time to ready; `all_ready_ms` is the last one. Then the host cost of the server's
 * QEMU processes (sandboxes and pool VMs alike) per ready sandbox, idle, over `idleWindowMs`.
 */
export async function concurrentStart(
  rpc: RpcClient,
  server: MsbServer,
  accelerator: string,
  options: { readonly n: number; readonly idleWindowMs: number; readonly settleMs: number },
): Promise<ScenarioResult> {
  const names = Array.from({ length: options.n }, (_, i) => `many-${options.n}-${i}`);
  const samples = new Samples();
  const kinds: string[] = [];
  const ready: string[] = [];
  const t0 = performance.now();
  await Promise.all(
    names.map(async (sandbox) => {
      try {
        const r = await startDetailed(rpc, sandbox, PYTHON);
        samples.values.push(performance.now() - t0);
        kinds.push(r.start_kind ?? "unknown");
        ready.push(sandbox);
      } catch (err) {
        samples.fail(err);
      }
    }),
  );
  const allSettledMs = Math.round(performance.now() - t0);
  let cost: Record<string, unknown> = {};
  if (ready.length > 0) {
    await sleep(options.settleMs);
    const c = await measureQemuCost(server.home, options.idleWindowMs);
    const vmm = (await rpc.health()).services?.vmm;
    const per = (v: number) => Math.round((v / ready.length) * 10) / 10;
    cost = {
      qemu_processes: c.processes,
      qemu_rss_total_mib: c.rssMib,
      qemu_pss_total_mib: c.pssMib,
      rss_per_sandbox_mib: per(c.rssMib),
      pss_per_sandbox_mib: per(c.pssMib),
      cpu_per_idle_sandbox_percent: Math.round((c.cpuPercent / ready.length) * 100) / 100,
      cpu_window_ms: c.windowMs,
      vms_paused: vmm?.vms_paused ?? null,
      pool_vms: (vmm?.templates ?? []).reduce((s, t) => s + t.pool_ready, 0),
    };
  }
  await pool(ready, 8, (sandbox) => stopQuietly(rpc, sandbox));
  const s = samples.result(`concurrent_start.${options.n}`, accelerator, {
    concurrency: options.n,
    ready: ready.length,
    failed: options.n - ready.length,
    all_ready_ms: ready.length === options.n ? Math.round(Math.max(...samples.values)) : null,
    all_settled_ms: allSettledMs,
    start_kinds: countBy(kinds),
    memory_mib: "default",
    ...cost,
  });
  return s;
}

/**
 * Scenario 5: start → first output → stop in a loop for `durationMs`, `concurrency` loops at
 * once. Samples are whole cycles; `starts_per_second` is completed cycles over the time taken.
 */
export async function sustainedStarts(
  rpc: RpcClient,
  accelerator: string,
  options: { readonly durationMs: number; readonly concurrency: number },
): Promise<ScenarioResult> {
  const samples = new Samples();
  const kinds: string[] = [];
  const t0 = performance.now();
  const end = t0 + options.durationMs;
  let lastEnd = t0;
  const loop = async (worker: number) => {
    for (let i = 0; performance.now() < end; i++) {
      const sandbox = `loop-${worker}-${i}`;
      const c0 = performance.now();
      try {
        const r = await startDetailed(rpc, sandbox, PYTHON);
        await runExpecting(rpc, sandbox, "python", "print(1)", "1");
        await rpc.call("sandbox.stop", { sandbox });
        lastEnd = performance.now();
        samples.values.push(lastEnd - c0);
        kinds.push(r.start_kind ?? "unknown");
      } catch (err) {
        samples.fail(err);
        await stopQuietly(rpc, sandbox);
      }
    }
  };
  await Promise.all(Array.from({ length: options.concurrency }, (_, w) => loop(w)));
  const seconds = (lastEnd - t0) / 1000;
  return samples.result("sustained_starts", accelerator, {
    concurrency: options.concurrency,
    duration_ms: options.durationMs,
    cycles: samples.values.length,
    starts_per_second:
      samples.values.length > 0 ? Math.round((samples.values.length / seconds) * 100) / 100 : 0,
    start_kinds: countBy(kinds),
  });
}
