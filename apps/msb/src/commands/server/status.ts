import { Command } from "commander";
import { MsbError } from "@msb/errors";
import { createApiKey } from "@msb/keys";
import { z } from "zod";
import { createControlPlaneClient, DEFAULT_SERVER_URL } from "../../client/control-plane.js";
import { printJson, type CliDeps, type GlobalOptions } from "../../cli/context.js";
import { globalOptions } from "../../cli/globals.js";
import { formatBytes, formatTable } from "../../cli/table.js";
import { msbPaths, SERVICE_NAMES } from "../../home.js";
import { acceleratorOf } from "../../server/health.js";
import { readLockState, type LockRecord } from "../../server/lock.js";
import { isSameLiveProcess } from "../../server/proc.js";
import { secretFromEnv } from "../../server/secret.js";
import { resolveSigningSecret } from "../../server/secrets.js";

export interface StatusOptions {
  readonly namespace?: string;
}

const sandboxSchema = z.object({
  namespace: z.string(),
  name: z.string(),
  running: z.boolean(),
  cpu_usage: z.number().nullable().optional(),
  memory_usage: z.number().nullable().optional(),
  disk_usage: z.number().nullable().optional(),
});
export type SandboxStatus = z.infer<typeof sandboxSchema>;
const metricsSchema = z.object({ sandboxes: z.array(sandboxSchema) });

/** What `msb server status --json` prints. */
export interface StatusReport {
  readonly running: boolean;
  readonly url: string;
  readonly home: string;
  readonly pid?: number;
  readonly dev?: boolean;
  readonly startedAt?: string;
  readonly accelerator?: string;
  readonly health?: Record<string, unknown>;
  /** Each supervised service: its pid and whether that process is alive (from the lock). */
  readonly services: readonly { name: string; pid: number | null; running: boolean }[];
  readonly sandboxes: readonly SandboxStatus[];
  /** Why the sandbox list could not be read (auth, server error); the rest is still valid. */
  readonly sandboxesError?: { code: string; message: string };
}

export function renderStatus(report: StatusReport): string {
  const mode = report.dev === undefined ? "" : report.dev ? ", dev mode" : ", API keys required";
  const lines = [
    `msb server running at ${report.url} (pid ${report.pid ?? "?"}${mode}${report.startedAt === undefined ? "" : `, since ${report.startedAt}`})`,
    `accelerator: ${report.accelerator ?? "unknown"}   MSB_HOME: ${report.home}`,
    "",
    formatTable(
      ["service", "pid", "state"],
      report.services.map((s) => [
        s.name,
        s.pid === null ? "-" : String(s.pid),
        s.running ? "running" : "down",
      ]),
    ),
    "",
  ];
  if (report.sandboxesError !== undefined) {
    lines.push(
      `sandboxes: unavailable (${report.sandboxesError.code}): ${report.sandboxesError.message}`,
    );
  } else if (report.sandboxes.length === 0) {
    lines.push("no sandboxes");
  } else {
    lines.push(
      formatTable(
        ["namespace", "name", "status", "cpu", "memory", "disk"],
        report.sandboxes.map((s) => [
          s.namespace,
          s.name,
          s.running ? "running" : "stopped",
          s.cpu_usage === null || s.cpu_usage === undefined ? "-" : `${s.cpu_usage.toFixed(1)}%`,
          s.memory_usage === null || s.memory_usage === undefined ? "-" : `${s.memory_usage} MiB`,
          s.disk_usage === null || s.disk_usage === undefined ? "-" : formatBytes(s.disk_usage),
        ]),
      ),
    );
  }
  return `${lines.join("\n")}\n`;
}

async function apiKeyFor(
  lock: LockRecord | undefined,
  global: GlobalOptions,
  deps: CliDeps,
): Promise<string | undefined> {
  const given = deps.env["MSB_API_KEY"];
  if (given !== undefined && given !== "") return given;
  if (lock === undefined || lock.dev) return undefined;
  // Same host, same MSB_HOME: sign a short-lived key with the server's own secret.
  if (lock.customSecret === true && secretFromEnv(deps.env) === undefined) return undefined;
  const secret = await resolveSigningSecret(undefined, deps.env, global.home);
  return createApiKey(secret, { namespace: "*", expiresInMs: 5 * 60_000 });
}

/**
 * Server, services, accelerator and sandboxes of this MSB_HOME (or of `MSB_SERVER_URL`).
 * A server that is not running is SERVER_NOT_RUNNING (exit 10), so scripts can test for it.
 */
export async function runServerStatus(
  names: readonly string[],
  options: StatusOptions,
  global: GlobalOptions,
  deps: CliDeps,
): Promise<StatusReport> {
  const paths = msbPaths(global.home);
  const state = readLockState(paths.lockFile, deps.table);
  const lock = state.kind === "running" ? state.lock : undefined;
  const envUrl = deps.env["MSB_SERVER_URL"];
  const url = envUrl ?? lock?.url ?? DEFAULT_SERVER_URL;
  if (lock === undefined && envUrl === undefined) {
    throw new MsbError(
      "SERVER_NOT_RUNNING",
      `msb server is not running for MSB_HOME ${paths.home}; start it with \`msb server start --dev\`.`,
      { details: { home: paths.home, url } },
    );
  }
  const apiKey = await apiKeyFor(lock, global, deps);
  const client = createControlPlaneClient({ url, ...(apiKey === undefined ? {} : { apiKey }) });
  const health = await client.health();
  const accelerator = acceleratorOf(health);
  let sandboxes: SandboxStatus[] = [];
  let sandboxesError: StatusReport["sandboxesError"];
  try {
    const result = metricsSchema.parse(
      await client.rpc("sandbox.metrics.get", { namespace: options.namespace ?? "*" }),
    );
    sandboxes = result.sandboxes.filter((s) => names.length === 0 || names.includes(s.name));
  } catch (err) {
    const e =
      err instanceof MsbError
        ? err
        : new MsbError(
            "SERVICE_UNAVAILABLE",
            "sandbox.metrics.get answered in an unexpected shape.",
            { cause: err },
          );
    const hint =
      e.code.startsWith("AUTH_") && lock?.customSecret === true && apiKey === undefined
        ? " This server was started with --key: set MSB_API_KEY (from `msb server keygen --key …`) or MSB_SERVER_KEY."
        : "";
    sandboxesError = { code: e.code, message: `${e.message}${hint}` };
  }
  const services = SERVICE_NAMES.map((name) => {
    const child = lock?.services[name];
    return {
      name,
      pid: child?.pid ?? null,
      running: child !== undefined && isSameLiveProcess(deps.table, child.pid, child.startTime),
    };
  });
  const report: StatusReport = {
    running: true,
    url,
    home: paths.home,
    ...(lock === undefined ? {} : { pid: lock.pid, dev: lock.dev, startedAt: lock.startedAt }),
    ...(accelerator === undefined ? {} : { accelerator }),
    health,
    services,
    sandboxes,
    ...(sandboxesError === undefined ? {} : { sandboxesError }),
  };
  if (global.json) printJson(deps.io, report);
  else deps.io.out(renderStatus(report));
  return report;
}

export function serverStatusCommand(deps: CliDeps): Command {
  return new Command("status")
    .description("show the server, its services, the accelerator and the sandboxes")
    .argument("[names...]", "only these sandboxes")
    .option("--namespace <name>", "only this namespace (default: all)")
    .action(async (names: string[], options: StatusOptions, cmd: Command) => {
      await runServerStatus(names, options, globalOptions(cmd, deps.env), deps);
    });
}
