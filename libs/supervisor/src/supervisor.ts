import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync, rmSync, statSync } from "node:fs";
import { dirname } from "node:path";
import { MsbError } from "@msb/errors";
import type { Logger } from "@msb/runtime";
import { followLogs, readLogTail, type FollowTarget } from "./log-files.js";
import type { LogEntry } from "./log-lines.js";
import { ensurePrivateDir } from "./private-dir.js";
import type { ProcessTable } from "./proc.js";

/** How to run one service and how to tell it is ready. */
export interface ServiceSpec {
  readonly name: string;
  /** Services of one stage start together; a stage starts when the previous one is ready. */
  readonly stage: number;
  readonly command: string;
  readonly args: readonly string[];
  readonly env: NodeJS.ProcessEnv;
  readonly logFile: string;
  /** Resolves once the service accepts requests; `signal` aborts when the child exits. */
  readonly ready: (signal: AbortSignal) => Promise<void>;
  /** Time between SIGTERM and SIGKILL when stopping it. */
  readonly stopTimeoutMs: number;
  /**
   * The unix socket the service listens on, if any. A crashed service leaves it behind and
   * its successor's bind would fail, so it is removed before every (re)start.
   */
  readonly socketPath?: string;
}

export interface RestartPolicy {
  /** First restart delay; doubled on each fast crash. */
  readonly baseDelayMs: number;
  readonly maxDelayMs: number;
  /** A crash within this time of the start counts as a fast crash. */
  readonly fastCrashWindowMs: number;
  /** Consecutive fast crashes after which the supervisor gives up. */
  readonly maxFastCrashes: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicy = {
  baseDelayMs: 500,
  maxDelayMs: 30_000,
  fastCrashWindowMs: 30_000,
  maxFastCrashes: 5,
};

export type SupervisorEvent =
  | {
      readonly type: "spawned";
      readonly service: string;
      readonly pid: number;
      readonly startTime: string;
    }
  | { readonly type: "ready"; readonly service: string; readonly pid: number }
  | {
      readonly type: "exited";
      readonly service: string;
      readonly pid: number;
      readonly reason: string;
      readonly expected: boolean;
    }
  | {
      readonly type: "restarting";
      readonly service: string;
      readonly delayMs: number;
      readonly crashes: number;
    }
  | { readonly type: "log"; readonly service: string; readonly entry: LogEntry };

export interface SupervisorOptions {
  readonly services: readonly ServiceSpec[];
  /** Stop order; services not listed stop last. Default: reverse start order. */
  readonly stopOrder?: readonly string[];
  readonly logger: Logger;
  readonly table: ProcessTable;
  readonly restart?: RestartPolicy;
  /** Deadline for each stage to become ready. */
  readonly readyTimeoutMs: number;
  /** Lines of a service's log quoted when it fails. */
  readonly tailLines?: number;
  readonly onEvent?: (event: SupervisorEvent) => void;
}

/** Why the supervisor ended on its own: a service that could not be kept running. */
export interface SupervisorOutcome {
  readonly error?: MsbError;
}

export interface Supervisor {
  /**
   * Starts every stage in order. Rejects with SERVICE_UNAVAILABLE naming the service, why it
   * failed and the last lines of its log, after stopping whatever had started.
   */
  start(signal?: AbortSignal): Promise<void>;
  /** Stops services in stop order (SIGTERM, deadline, SIGKILL). Idempotent. */
  stop(reason: string): Promise<void>;
  /** SIGKILLs every child now (second Ctrl-C). */
  killNow(): void;
  /** Resolves when the supervisor stopped: after `stop`, or after giving up on a service. */
  readonly done: Promise<SupervisorOutcome>;
  /** pid and start time of each running child. */
  children(): ReadonlyMap<string, { pid: number; startTime: string }>;
}

interface Running {
  readonly child: ChildProcess;
  readonly pid: number;
  readonly startTime: string;
  readonly startedAt: number;
  readonly exited: Promise<string>;
  readonly alive: AbortController;
}

function fileSize(path: string): number {
  try {
    return statSync(path).size;
  } catch {
    return 0;
  }
}

function describeExit(code: number | null, signal: NodeJS.Signals | null): string {
  if (signal !== null) return `was killed by ${signal}`;
  return `exited with code ${code ?? "unknown"}`;
}

export function createSupervisor(options: SupervisorOptions): Supervisor {
  const { logger, table } = options;
  const policy = options.restart ?? DEFAULT_RESTART_POLICY;
  const tailLines = options.tailLines ?? 12;
  const specs = new Map(options.services.map((s) => [s.name, s]));
  const running = new Map<string, Running>();
  const fastCrashes = new Map<string, number>();
  const restartTimers = new Map<string, NodeJS.Timeout>();
  let stopping: Promise<void> | undefined;
  let started = false;
  let gaveUp: MsbError | undefined;
  /** Aborted (with the failure) when any service dies while the server is still starting. */
  const startFailed = new AbortController();
  let resolveDone: (outcome: SupervisorOutcome) => void = () => undefined;
  const done = new Promise<SupervisorOutcome>((resolve) => {
    resolveDone = resolve;
  });
  const emit = (event: SupervisorEvent) => options.onEvent?.(event);

  // Services write their stdout/stderr straight into their log file (an fd they own), not
  // through a pipe to us: when the supervisor is killed, a service shutting down on PDEATHSIG
  // must not block or die on a pipe nobody reads. Warnings are forwarded by following the files.
  const follow = new AbortController();
  const targets: FollowTarget[] = options.services.map((spec) => {
    ensurePrivateDir(dirname(spec.logFile));
    return { path: spec.logFile, svc: spec.name, offset: fileSize(spec.logFile) };
  });
  const following = followLogs(
    targets,
    (entry) => emit({ type: "log", service: entry.svc, entry }),
    follow.signal,
  );

  const tailText = (spec: ServiceSpec): string => {
    const tail = readLogTail(spec.logFile, tailLines);
    return tail.length === 0 ? "(its log is empty)" : tail.map((l) => `  ${l}`).join("\n");
  };

  const failure = (spec: ServiceSpec, why: string): MsbError =>
    new MsbError(
      "SERVICE_UNAVAILABLE",
      `${spec.name} ${why}. Last lines of ${spec.logFile}:\n${tailText(spec)}\nNext step: fix the cause above, then run \`msb server start\` again (full log: \`msb server log --service ${spec.name}\`).`,
      { details: { service: spec.name, logFile: spec.logFile } },
    );

  const cancelled = (): MsbError =>
    new MsbError("CANCELLED", "msb server start was stopped before the server was ready.");

  const launch = (spec: ServiceSpec): Running => {
    // Nothing is spawned once stop has begun: stop walks the services once, in order, and a
    // child spawned behind it would outlive the supervisor's own shutdown.
    if (stopping !== undefined) throw cancelled();
    if (spec.socketPath !== undefined) rmSync(spec.socketPath, { force: true });
    const fd = openSync(spec.logFile, "a", 0o600);
    const child = spawn(spec.command, [...spec.args], {
      env: spec.env,
      stdio: ["ignore", fd, fd],
    });
    closeSync(fd);
    const alive = new AbortController();
    const exited = new Promise<string>((resolve) => {
      child.once("exit", (code, signal) => resolve(describeExit(code, signal)));
      child.once("error", (err) => resolve(`could not be spawned: ${err.message}`));
    });
    const pid = child.pid ?? -1;
    const startTime = table.info(pid)?.startTime ?? "";
    const run: Running = { child, pid, startTime, startedAt: Date.now(), exited, alive };
    running.set(spec.name, run);
    logger.info({ service: spec.name, childPid: pid }, "service spawned");
    if (pid > 0) emit({ type: "spawned", service: spec.name, pid, startTime });
    void exited.then((reason) => onExit(spec, run, reason));
    return run;
  };

  const onExit = (spec: ServiceSpec, run: Running, reason: string) => {
    run.alive.abort(new Error(reason));
    if (running.get(spec.name) === run) running.delete(spec.name);
    const expected = stopping !== undefined;
    logger[expected ? "info" : "error"](
      { service: spec.name, childPid: run.pid, reason },
      "service exited",
    );
    emit({ type: "exited", service: spec.name, pid: run.pid, reason, expected });
    if (expected) return;
    if (!started) {
      startFailed.abort(failure(spec, `${reason} while the server was starting`));
      return;
    }
    const uptime = Date.now() - run.startedAt;
    const crashes = uptime < policy.fastCrashWindowMs ? (fastCrashes.get(spec.name) ?? 0) + 1 : 1;
    fastCrashes.set(spec.name, crashes);
    if (crashes >= policy.maxFastCrashes) {
      gaveUp = failure(
        spec,
        `crashed ${crashes} times in a row (last: ${reason}); msb gave up restarting it`,
      );
      logger.error({ service: spec.name, crashes, reason }, "giving up on service");
      void stop(`${spec.name} keeps crashing`);
      return;
    }
    const delayMs = Math.min(policy.baseDelayMs * 2 ** (crashes - 1), policy.maxDelayMs);
    logger.warn({ service: spec.name, crashes, delayMs, reason }, "restarting service");
    emit({ type: "restarting", service: spec.name, delayMs, crashes });
    restartTimers.set(
      spec.name,
      setTimeout(() => {
        restartTimers.delete(spec.name);
        if (stopping !== undefined) return;
        const next = launch(spec);
        void spec
          .ready(next.alive.signal)
          .then(() => emit({ type: "ready", service: spec.name, pid: next.pid }))
          .catch(() => undefined);
      }, delayMs),
    );
  };

  const waitReady = async (spec: ServiceSpec, run: Running, signal?: AbortSignal) => {
    const deadline = AbortSignal.timeout(options.readyTimeoutMs);
    const all = AbortSignal.any([
      run.alive.signal,
      deadline,
      startFailed.signal,
      ...(signal ? [signal] : []),
    ]);
    try {
      await spec.ready(all);
    } catch (err) {
      if (run.alive.signal.aborted) {
        const reason = await run.exited;
        throw failure(spec, `${reason} before it was ready`);
      }
      if (startFailed.signal.aborted && startFailed.signal.reason instanceof MsbError) {
        throw startFailed.signal.reason;
      }
      if (signal?.aborted === true) {
        throw new MsbError("CANCELLED", "msb server start was cancelled.", { cause: err });
      }
      if (deadline.aborted) {
        throw failure(spec, `did not become ready within ${options.readyTimeoutMs} ms`);
      }
      throw failure(spec, `failed its readiness check: ${(err as Error).message}`);
    }
    logger.info({ service: spec.name, childPid: run.pid }, "service ready");
    emit({ type: "ready", service: spec.name, pid: run.pid });
  };

  const start = async (signal?: AbortSignal) => {
    const stages = [...new Set(options.services.map((s) => s.stage))].sort((a, b) => a - b);
    try {
      for (const stage of stages) {
        if (stopping !== undefined) throw cancelled();
        const inStage = options.services.filter((s) => s.stage === stage);
        const runs = inStage.map((spec) => ({ spec, run: launch(spec) }));
        const results = await Promise.allSettled(
          runs.map(({ spec, run }) => waitReady(spec, run, signal)),
        );
        const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
        if (failed !== undefined) throw failed.reason;
      }
      if (stopping !== undefined) throw cancelled();
      started = true;
    } catch (err) {
      await stop("start failed");
      throw err;
    }
  };

  const stopOne = async (spec: ServiceSpec) => {
    const run = running.get(spec.name);
    if (run === undefined) return;
    run.child.kill("SIGTERM");
    const timer = new Promise<"timeout">((resolve) => {
      setTimeout(() => resolve("timeout"), spec.stopTimeoutMs).unref();
    });
    if ((await Promise.race([run.exited, timer])) === "timeout") {
      logger.warn(
        { service: spec.name, childPid: run.pid, timeoutMs: spec.stopTimeoutMs },
        "service did not stop in time; killing it",
      );
      run.child.kill("SIGKILL");
      await run.exited;
    }
  };

  const stop = (reason: string): Promise<void> => {
    stopping ??= (async () => {
      logger.info({ reason }, "stopping services");
      for (const timer of restartTimers.values()) clearTimeout(timer);
      restartTimers.clear();
      const order = options.stopOrder ?? [...options.services].reverse().map((s) => s.name);
      const rest = options.services.map((s) => s.name).filter((n) => !order.includes(n));
      for (const name of [...order, ...rest]) {
        const spec = specs.get(name);
        if (spec !== undefined) await stopOne(spec);
      }
      follow.abort();
      await following;
      logger.info("services stopped");
    })();
    void stopping.then(() => resolveDone(gaveUp === undefined ? {} : { error: gaveUp }));
    return stopping;
  };

  return {
    start,
    stop,
    done,
    killNow() {
      for (const run of running.values()) run.child.kill("SIGKILL");
    },
    children() {
      return new Map(
        [...running].map(([name, r]) => [name, { pid: r.pid, startTime: r.startTime }]),
      );
    },
  };
}
