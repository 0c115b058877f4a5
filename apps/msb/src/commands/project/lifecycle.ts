import { setTimeout as sleep } from "node:timers/promises";
import { MsbError, toMsbError } from "@msb/errors";
import type { CliDeps } from "../../cli/context.js";
import type { ControlPlaneClient } from "@msb/wire";
import {
  detachedLaunch,
  logPollCommand,
  parseLogPoll,
  runCommand,
  startSandbox,
  stopSandbox,
} from "../../project/remote.js";
import { startConfigOf, type Project, type ProjectSandbox } from "../../project/sandboxfile.js";
import { findEntry, recordStarted, recordStopped, type ProjectState } from "../../project/state.js";
import { isDeepStrictEqual } from "node:util";

export interface StartOutcome {
  readonly started: string[];
  readonly failed: { name: string; code: string; message: string }[];
  /** Not attempted because a dependency failed. */
  readonly skipped: { name: string; because: string }[];
}

export interface LifecycleContext {
  readonly client: ControlPlaneClient;
  readonly project: Project;
  readonly namespace: string;
  readonly state: ProjectState;
  readonly deps: CliDeps;
  /** `--json`: no progress lines on stdout. */
  readonly quiet: boolean;
}

function note(ctx: LifecycleContext, text: string): void {
  if (!ctx.quiet) ctx.deps.io.out(`${text}\n`);
}

/**
 * Starts `order` (dependencies first) one by one. A failure is reported and the sandboxes
 * that depend on it (directly or not) are skipped with the reason; independent ones still
 * start. `running` = sandboxes already running, whose recorded start time is kept.
 */
export async function startInOrder(
  ctx: LifecycleContext,
  order: readonly string[],
  running: ReadonlySet<string>,
  signal?: AbortSignal,
): Promise<StartOutcome> {
  const outcome: StartOutcome = { started: [], failed: [], skipped: [] };
  const broken = new Map<string, string>();
  for (const name of order) {
    const sb = ctx.project.sandboxes.find((s) => s.name === name);
    if (sb === undefined) continue;
    const bad = sb.dependsOn.find((d) => broken.has(d));
    if (bad !== undefined) {
      const because = `depends on ${bad}, which ${broken.get(bad) ?? "failed"}`;
      broken.set(name, `was skipped`);
      outcome.skipped.push({ name, because });
      ctx.deps.io.err(`msb: ${name} not started: it ${because}.\n`);
      continue;
    }
    if (signal?.aborted === true) break;
    const config = startConfigOf(sb);
    try {
      await startSandbox(ctx.client, ctx.namespace, name, config, signal);
    } catch (err) {
      const e = toMsbError(err);
      broken.set(name, "failed to start");
      outcome.failed.push({ name, code: e.code, message: e.message });
      ctx.deps.io.err(`msb: ${name} failed to start (${e.code}): ${e.message}\n`);
      continue;
    }
    const entry = findEntry(ctx.state, ctx.namespace, name);
    const unchanged = entry !== undefined && isDeepStrictEqual(entry.config, config);
    const since = unchanged && running.has(name) ? new Date(entry.startedAt) : new Date();
    recordStarted(ctx.state, ctx.namespace, name, config, since);
    outcome.started.push(name);
    note(ctx, `started ${name} (${sb.image}) in namespace ${ctx.namespace}`);
  }
  return outcome;
}

/** Stops `order` one by one (dependents first); forgets them in the state file. */
export async function stopInOrder(
  ctx: LifecycleContext,
  order: readonly string[],
): Promise<{
  stopped: string[];
  missing: string[];
  failed: { name: string; code: string; message: string }[];
}> {
  const stopped: string[] = [];
  const missing: string[] = [];
  const failed: { name: string; code: string; message: string }[] = [];
  for (const name of order) {
    try {
      const existed = await stopSandbox(ctx.client, ctx.namespace, name);
      recordStopped(ctx.state, ctx.namespace, name);
      if (existed) {
        stopped.push(name);
        note(ctx, `stopped ${name}`);
      } else {
        missing.push(name);
        note(ctx, `${name}: not on the server (never started)`);
      }
    } catch (err) {
      const e = toMsbError(err);
      failed.push({ name, code: e.code, message: e.message });
      ctx.deps.io.err(`msb: could not stop ${name} (${e.code}): ${e.message}\n`);
    }
  }
  return { stopped, missing, failed };
}

/** Launches the `start` script of each sandbox that has one, in the background in its guest. */
export async function launchStartScripts(
  ctx: LifecycleContext,
  names: readonly string[],
): Promise<string[]> {
  const launched: string[] = [];
  for (const name of names) {
    const sb = ctx.project.sandboxes.find((s) => s.name === name);
    const script = sb?.scripts["start"];
    if (sb === undefined || script === undefined) continue;
    await launchScript(ctx.client, ctx.namespace, sb, "start", script);
    launched.push(name);
    note(ctx, `${name}: start script running in the background (\`msb log ${name}\`)`);
  }
  return launched;
}

export async function launchScript(
  client: ControlPlaneClient,
  namespace: string,
  sb: ProjectSandbox,
  scriptName: string,
  script: string,
): Promise<void> {
  const { command, args } = detachedLaunch(sb.shell, script, scriptName);
  const result = await runCommand(client, namespace, sb.name, command, args, 60);
  if (result.exit_code !== 0) {
    const text = result.output.map((o) => o.text).join("\n");
    throw new MsbError(
      "AGENT_PROTOCOL_ERROR",
      `could not launch script "${scriptName}" in ${sb.name} (exit ${String(result.exit_code)}): ${text}. Next step: check that the image has ${sb.shell} and nohup.`,
      { details: { sandbox: sb.name, script: scriptName } },
    );
  }
}

/** How often `--follow` and a foreground `up` poll the guest logs. */
export const POLL_INTERVAL_MS = 1000;

/**
 * Prints new lines of the `scriptName` log of each sandbox (prefixed `name | ` when there are
 * several) every POLL_INTERVAL_MS until `signal` aborts. `from` = lines already shown.
 */
export async function followLogs(
  client: ControlPlaneClient,
  namespace: string,
  names: readonly string[],
  scriptName: string,
  deps: CliDeps,
  signal: AbortSignal,
  options: { from?: Map<string, number>; json?: boolean } = {},
): Promise<void> {
  const seen = options.from ?? new Map<string, number>();
  const ended = new Set<string>();
  while (!signal.aborted) {
    for (const name of names) {
      if (signal.aborted) break;
      let poll;
      try {
        const { command, args } = logPollCommand(scriptName, seen.get(name) ?? 0);
        poll = parseLogPoll(await runCommand(client, namespace, name, command, args, 30, signal));
      } catch (err) {
        if (signal.aborted) break;
        throw err;
      }
      // A restarted script truncates its log: start again from the top.
      if (poll.count < (seen.get(name) ?? 0)) seen.set(name, 0);
      const prefix = names.length > 1 ? `${name} | ` : "";
      for (const line of poll.lines) {
        deps.io.out(
          options.json === true
            ? `${JSON.stringify({ sandbox: name, line })}\n`
            : `${prefix}${line}\n`,
        );
      }
      seen.set(name, poll.count);
      if (poll.exitCode !== undefined && !ended.has(name)) {
        ended.add(name);
        deps.io.err(`msb: ${name}: ${scriptName} script exited with code ${poll.exitCode}\n`);
      }
    }
    await sleep(POLL_INTERVAL_MS, undefined, { signal }).catch(() => undefined);
  }
}
