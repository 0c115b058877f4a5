import { Command, Option } from "commander";
import type { CliDeps, GlobalOptions } from "../../cli/context.js";
import { globalOptions } from "../../cli/globals.js";
import { parseCount } from "../../cli/parse.js";
import {
  followLogs,
  type FollowTarget,
  formatLogEntry,
  LOG_SOURCES,
  type LogEntry,
  type LogSource,
  mergeByTime,
  msbPaths,
  readLogEntries,
} from "@msb/supervisor";

export interface LogOptions {
  readonly follow: boolean;
  readonly tail: number;
  readonly service?: LogSource;
}

function print(entry: LogEntry, global: GlobalOptions, deps: CliDeps): void {
  if (global.json) {
    // One JSON object per line, `svc` always set, for jq and friends.
    deps.io.out(
      `${entry.raw.startsWith("{") ? entry.raw : JSON.stringify({ svc: entry.svc, msg: entry.msg })}\n`,
    );
  } else {
    deps.io.out(`${formatLogEntry(entry)}\n`);
  }
}

/**
 * The server's logs (`$MSB_HOME/logs/<service>.log`, pino JSON lines): the last `tail` lines of
 * one service, or of all of them merged by time, then with `--follow` whatever is appended.
 */
export async function runServerLog(
  options: LogOptions,
  global: GlobalOptions,
  deps: CliDeps,
  signal?: AbortSignal,
): Promise<void> {
  const paths = msbPaths(global.home);
  const sources: readonly LogSource[] =
    options.service === undefined ? LOG_SOURCES : [options.service];
  const targets: FollowTarget[] = [];
  const perSource = sources.map((svc) => {
    const path = paths.logOf(svc);
    const { entries, size } = readLogEntries(path, svc, options.tail);
    targets.push({ path, svc, offset: size });
    return entries;
  });
  const merged = mergeByTime(perSource);
  for (const entry of merged.slice(Math.max(0, merged.length - options.tail)))
    print(entry, global, deps);
  if (!options.follow) {
    if (merged.length === 0 && !global.json)
      deps.io.err(`msb: no log lines yet in ${paths.logsDir}\n`);
    return;
  }
  const stop = new AbortController();
  const onSignal = () => stop.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  signal?.addEventListener("abort", onSignal, { once: true });
  try {
    await followLogs(targets, (entry) => print(entry, global, deps), stop.signal);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}

export function serverLogCommand(deps: CliDeps): Command {
  return new Command("log")
    .description("show the server's logs (all services merged by time, or one with --service)")
    .option("-f, --follow", "keep printing new lines until Ctrl-C", false)
    .addOption(
      new Option("-n, --tail <lines>", "lines to show first").default(50).argParser(parseCount),
    )
    .addOption(new Option("--service <name>", "only this service").choices(LOG_SOURCES))
    .action(async (options: LogOptions, cmd: Command) => {
      await runServerLog(options, globalOptions(cmd, deps.env), deps);
    });
}
