import { unlinkSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { Command, Option } from "commander";
import { printJson, type CliDeps, type GlobalOptions } from "../../cli/context.js";
import { globalOptions } from "../../cli/globals.js";
import { parseCount } from "../../cli/parse.js";
import { isSameLiveProcess, killLeftovers, msbPaths, readLockState } from "@msb/supervisor";

export interface StopOptions {
  /** Seconds the supervisor gets to stop its services before it is killed. */
  readonly timeout: number;
}

/** What `msb server stop --json` prints. */
export interface StopResult {
  /** `stopped`: a running server was stopped; `not-running`: there was none (exit 0 too). */
  readonly status: "stopped" | "not-running";
  readonly home: string;
  readonly pid?: number;
  /** True when the supervisor missed the deadline and was SIGKILLed. */
  readonly forced: boolean;
  /** Leftover processes (services of a dead server, QEMU stragglers) that were killed. */
  readonly killed: readonly string[];
}

function removeQuietly(path: string): void {
  try {
    unlinkSync(path);
  } catch {
    // Already gone.
  }
}

/**
 * Stops the server of this MSB_HOME: SIGTERM to the supervisor (which stops control-plane,
 * vmm-agent, image-service in that order), wait, SIGKILL after the deadline, then make sure no
 * service or QEMU process of this home is left. Idempotent: no server → exit 0.
 */
export async function runServerStop(
  options: StopOptions,
  global: GlobalOptions,
  deps: CliDeps,
): Promise<StopResult> {
  const paths = msbPaths(global.home);
  const { table } = deps;
  const state = readLockState(paths.lockFile, table);
  let result: StopResult;
  if (state.kind === "running") {
    const { lock } = state;
    table.kill(lock.pid, "SIGTERM");
    const deadline = Date.now() + options.timeout * 1000;
    while (isSameLiveProcess(table, lock.pid, lock.startTime) && Date.now() < deadline)
      await sleep(100);
    const forced = isSameLiveProcess(table, lock.pid, lock.startTime);
    if (forced) {
      table.kill(lock.pid, "SIGKILL");
      while (isSameLiveProcess(table, lock.pid, lock.startTime)) await sleep(50);
    }
    // After a clean stop this finds nothing; after a forced one it reaps the services.
    const killed = await killLeftovers(table, paths, lock);
    if (forced) {
      removeQuietly(paths.lockFile);
      removeQuietly(paths.pidFile);
    }
    result = { status: "stopped", home: paths.home, pid: lock.pid, forced, killed };
  } else {
    const killed = await killLeftovers(
      table,
      paths,
      state.kind === "stale" ? state.lock : undefined,
    );
    if (state.kind === "stale") {
      removeQuietly(paths.lockFile);
      removeQuietly(paths.pidFile);
    }
    result = {
      status: "not-running",
      home: paths.home,
      ...(state.kind === "stale" && state.lock !== undefined ? { pid: state.lock.pid } : {}),
      forced: false,
      killed,
    };
  }
  if (global.json) printJson(deps.io, result);
  else deps.io.out(describeStop(result));
  return result;
}

function describeStop(result: StopResult): string {
  const killed = result.killed.length > 0 ? `; killed leftovers: ${result.killed.join(", ")}` : "";
  if (result.status === "not-running") {
    return `msb server is not running (MSB_HOME ${result.home})${killed}\n`;
  }
  const how = result.forced ? " (it missed the deadline and was killed)" : "";
  return `msb server stopped (pid ${result.pid ?? "?"})${how}${killed}\n`;
}

export function serverStopCommand(deps: CliDeps): Command {
  return new Command("stop")
    .description(
      "stop the msb server of this MSB_HOME and everything it started (exit 0 if none is running)",
    )
    .addOption(
      new Option("--timeout <seconds>", "time the services get to stop before they are killed")
        .default(60)
        .argParser(parseCount),
    )
    .action(async (options: StopOptions, cmd: Command) => {
      await runServerStop(options, globalOptions(cmd, deps.env), deps);
    });
}
