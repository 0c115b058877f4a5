import { MsbError } from "@msb/errors";
import { createApiKey } from "@msb/keys";
import { z } from "zod";
import type { CliDeps, GlobalOptions } from "../cli/context.js";
import {
  commandResultSchema,
  createControlPlaneClient,
  DEFAULT_SERVER_URL,
  sandboxMetricsSchema,
  type CommandResult,
  type ControlPlaneClient,
  type ServerTarget,
} from "@msb/wire";
import { msbPaths, readLockState, resolveSigningSecret, secretFromEnv } from "@msb/supervisor";
import type { StartConfig } from "./sandboxfile.js";

/** `sandbox.start` may pull an image and boot a VM: allow it this long. */
export const START_TIMEOUT_MS = 15 * 60_000;
/** Longest a foreground script may run (the API's own maximum, seconds). */
export const SCRIPT_TIMEOUT_S = 3600;

/** Where the CLI's calls go and with which key (the wire's shape). */
export type { ServerTarget };

/**
 * The server this CLI should talk to: `MSB_SERVER_URL`, else the one this MSB_HOME's lock
 * records, else the default address. Key: `MSB_API_KEY`, else (same host, same home, server
 * not in dev mode) a 5-minute all-namespaces key signed with the server's own secret.
 */
export async function resolveServerTarget(
  global: GlobalOptions,
  deps: CliDeps,
): Promise<ServerTarget> {
  const paths = msbPaths(global.home);
  const state = readLockState(paths.lockFile, deps.table);
  const lock = state.kind === "running" ? state.lock : undefined;
  const url = (deps.env["MSB_SERVER_URL"] ?? lock?.url ?? DEFAULT_SERVER_URL).replace(/\/+$/, "");
  let apiKey = deps.env["MSB_API_KEY"];
  if ((apiKey === undefined || apiKey === "") && lock !== undefined && !lock.dev) {
    apiKey =
      lock.customSecret === true && secretFromEnv(deps.env) === undefined
        ? undefined
        : createApiKey(await resolveSigningSecret(undefined, deps.env, global.home), {
            namespace: "*",
            expiresInMs: 5 * 60_000,
          });
  }
  return apiKey === undefined || apiKey === "" ? { url } : { url, apiKey };
}

/** A client for the server `resolveServerTarget` finds. */
export async function connect(
  global: GlobalOptions,
  deps: CliDeps,
  timeoutMs = START_TIMEOUT_MS,
): Promise<ControlPlaneClient> {
  return createControlPlaneClient({ ...(await resolveServerTarget(global, deps)), timeoutMs });
}

const metricsSchema = z.object({ sandboxes: z.array(sandboxMetricsSchema.passthrough()) });
export type SandboxMetrics = z.infer<typeof metricsSchema>["sandboxes"][number];
export type { CommandResult };

function unexpected(method: string, cause: unknown): MsbError {
  return new MsbError(
    "SERVICE_UNAVAILABLE",
    `the server answered ${method} in an unexpected shape. Next step: check that \`msb\` and the server are the same version (\`msb server status\`).`,
    { cause },
  );
}

export async function startSandbox(
  client: ControlPlaneClient,
  namespace: string,
  sandbox: string,
  config: StartConfig,
  signal?: AbortSignal,
): Promise<void> {
  await client.rpc("sandbox.start", { sandbox, namespace, config }, signal);
}

/**
 * Stops a sandbox; one the server does not know counts as stopped (returns false). `remove`
 * also deletes it (scratch disk and record), as `msb exe` does with its temporary sandboxes.
 */
export async function stopSandbox(
  client: ControlPlaneClient,
  namespace: string,
  sandbox: string,
  options: { readonly remove?: boolean } = {},
): Promise<boolean> {
  try {
    await client.rpc(
      "sandbox.stop",
      options.remove === true ? { sandbox, namespace, remove: true } : { sandbox, namespace },
    );
    return true;
  } catch (err) {
    if (err instanceof MsbError && err.code === "SANDBOX_NOT_FOUND") return false;
    throw err;
  }
}

export async function sandboxMetrics(
  client: ControlPlaneClient,
  namespace: string,
): Promise<SandboxMetrics[]> {
  const raw = await client.rpc("sandbox.metrics.get", { namespace });
  const parsed = metricsSchema.safeParse(raw);
  if (!parsed.success) throw unexpected("sandbox.metrics.get", parsed.error);
  return parsed.data.sandboxes;
}

export async function runCommand(
  client: ControlPlaneClient,
  namespace: string,
  sandbox: string,
  command: string,
  args: readonly string[],
  timeoutS: number,
  signal?: AbortSignal,
): Promise<CommandResult> {
  const raw = await client.rpc(
    "sandbox.command.run",
    { sandbox, namespace, command, args, timeout: timeoutS },
    signal,
  );
  return parseCommandResult(raw);
}

/** A `sandbox.command.run` result in the shape the CLI reads. */
export function parseCommandResult(raw: unknown): CommandResult {
  const parsed = commandResultSchema.safeParse(raw);
  if (!parsed.success) throw unexpected("sandbox.command.run", parsed.error);
  return parsed.data;
}

/** Guest path of the log a detached script writes (`msb log NAME --script S`). */
export function guestLogPath(script: string): string {
  return `/var/log/msb-${script}.log`;
}

/**
 * `sandbox.command.run` argv that starts `script` in the background inside the guest and
 * returns at once: `nohup SHELL -c SCRIPT`, output appended to the script's log, and the exit
 * code written to `<log>.exit` when it ends. Script and shell travel as positional parameters
 * (`$0`, `$1`), so no quoting of the user's script is involved.
 */
export function detachedLaunch(
  shell: string,
  script: string,
  scriptName: string,
): { command: string; args: string[] } {
  const log = guestLogPath(scriptName);
  const launcher =
    `mkdir -p /var/log; rm -f ${log}.exit; : > ${log}; ` +
    `( nohup "$0" -c "$1" >> ${log} 2>&1 < /dev/null; echo $? > ${log}.exit ) > /dev/null 2>&1 < /dev/null &`;
  return { command: "/bin/sh", args: ["-c", launcher, shell, script] };
}

/** Marker line that ends the output of a log poll (see `pollLog`). */
const MARK = "@@msb-log";

/**
 * argv that prints the complete lines `from+1 … end` of a guest log, then a marker with the
 * line count and the script's exit code (empty while it runs). Only whole lines are printed, so
 * a line being written is shown once, complete, by a later poll.
 */
export function logPollCommand(
  scriptName: string,
  from: number,
): { command: string; args: string[] } {
  const log = guestLogPath(scriptName);
  const script =
    `f=${log}; n=$(wc -l < "$f" 2>/dev/null || echo 0); n=$((n+0)); ` +
    `if [ "$n" -gt "$1" ]; then sed -n "$(($1+1)),\${n}p" "$f"; fi; ` +
    `echo "${MARK} $n $(cat "$f.exit" 2>/dev/null)"`;
  return { command: "/bin/sh", args: ["-c", script, "sh", String(from)] };
}

export interface LogPoll {
  readonly lines: string[];
  /** Lines in the file so far (pass as `from` next time). */
  readonly count: number;
  /** The script's exit code once it ended. */
  readonly exitCode?: number;
}

export function parseLogPoll(result: CommandResult): LogPoll {
  const stdout = result.output.filter((o) => o.stream === "stdout").map((o) => o.text);
  const markAt = stdout.findLastIndex((l) => l.startsWith(MARK));
  const mark = (stdout[markAt] ?? "").slice(MARK.length).trim().split(/\s+/);
  const count = Number(mark[0] ?? 0);
  const exit = mark[1];
  return {
    lines: markAt < 0 ? stdout : stdout.slice(0, markAt),
    count: Number.isFinite(count) ? count : 0,
    ...(exit === undefined || exit === "" ? {} : { exitCode: Number(exit) }),
  };
}
