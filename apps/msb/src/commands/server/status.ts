import { Command } from "commander";
import { MsbError } from "@msb/errors";
import { z } from "zod";
import {
  createControlPlaneClient,
  DEFAULT_SERVER_URL,
  sandboxMetricsSchema,
  vmmHealthSchema,
  type VmmHealth,
} from "@msb/wire";
import { printJson, type CliDeps, type GlobalOptions } from "../../cli/context.js";
import { globalOptions } from "../../cli/globals.js";
import { formatBytes, formatTable } from "../../cli/table.js";
import { resolveServerTarget } from "../../project/remote.js";
import {
  acceleratorOf,
  isSameLiveProcess,
  msbPaths,
  readLockState,
  startCommandOf,
  SERVICE_NAMES,
} from "@msb/supervisor";

export interface StatusOptions {
  readonly namespace?: string;
}

// The status table and --json show these fields (not a sandbox's state, reason or image).
const statusSchema = z.object({
  sandboxes: z.array(sandboxMetricsSchema.omit({ state: true, reason: true, image: true })),
});
export type SandboxStatus = z.infer<typeof statusSchema>["sandboxes"][number];
/** The vmm agent's VM counts, start counters and templates, as `/api/v1/health` reports them. */
export type VmmStatus = VmmHealth;

/** `services.vmm` of a health body, or undefined when the server does not report it. */
export function vmmStatusOf(health: unknown): VmmStatus | undefined {
  const services = z.object({ services: z.object({ vmm: vmmHealthSchema }) }).safeParse(health);
  if (!services.success) return undefined;
  const vmm = services.data.services.vmm;
  return Object.keys(vmm).length === 0 ? undefined : vmm;
}

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
  /** VM counts, start counters and templates/warm pools of the vmm agent, when it reports them. */
  readonly vmm?: VmmStatus;
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
  if (report.vmm !== undefined) lines.push(...renderVmm(report.vmm), "");
  if (report.sandboxesError !== undefined) {
    lines.push(
      `sandboxes: unavailable (${report.sandboxesError.code}): ${report.sandboxesError.message}`,
    );
  } else if (report.sandboxes.length === 0) {
    lines.push("no sandboxes");
  } else {
    lines.push(
      formatTable(
        ["namespace", "name", "status", "start", "cpu", "memory", "disk"],
        report.sandboxes.map((s) => [
          s.namespace,
          s.name,
          s.running ? (s.paused === true ? "paused" : "running") : "stopped",
          startOf(s),
          s.cpu_usage === null || s.cpu_usage === undefined ? "-" : `${s.cpu_usage.toFixed(1)}%`,
          s.memory_usage === null || s.memory_usage === undefined ? "-" : `${s.memory_usage} MiB`,
          s.disk_usage === null || s.disk_usage === undefined ? "-" : formatBytes(s.disk_usage),
        ]),
      ),
    );
  }
  return `${lines.join("\n")}\n`;
}

/** "pool 120 ms", "cold", or "-" when the server does not say. */
function startOf(s: SandboxStatus): string {
  if (s.start_kind === null || s.start_kind === undefined || s.start_kind === "") return "-";
  return s.boot_ms === null || s.boot_ms === undefined
    ? s.start_kind
    : `${s.start_kind} ${s.boot_ms} ms`;
}

function renderVmm(vmm: VmmStatus): string[] {
  const lines: string[] = [];
  const counts = [
    ...(vmm.vms_running === undefined
      ? []
      : [`${vmm.vms_running} running${vmm.max_vms ? ` (max ${vmm.max_vms})` : ""}`]),
    ...(vmm.vms_paused === undefined ? [] : [`${vmm.vms_paused} paused when idle`]),
  ];
  if (counts.length > 0) lines.push(`VMs: ${counts.join(", ")}`);
  if (vmm.starts !== undefined) {
    const s = vmm.starts;
    lines.push(
      `starts: ${s.pool_hits} from the warm pool, ${s.template_restores} template restores, ${s.cold_boots} cold boots (pool misses: ${s.pool_misses})`,
    );
  }
  if (vmm.templates !== undefined) {
    if (vmm.templates.length === 0) {
      lines.push("templates: none (every start is a cold boot)");
    } else {
      lines.push(
        "",
        formatTable(
          ["template", "image", "memory", "cpus", "state", "warm", "pool", "build"],
          vmm.templates.map((t) => [
            t.key,
            t.image,
            `${t.memory_mib} MiB`,
            String(t.vcpus),
            t.state,
            t.warm_language === "" ? "-" : t.warm_language,
            `${t.pool_ready}/${t.pool_target}`,
            t.build_ms > 0 ? `${(t.build_ms / 1000).toFixed(1)} s` : "-",
          ]),
        ),
      );
      for (const t of vmm.templates) {
        if (t.state === "failed")
          lines.push(`template ${t.key} failed: ${t.reason || "no reason given"}`);
      }
    }
  }
  return lines;
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
  const last = state.kind === "stale" ? state.lock : undefined;
  const envUrl = deps.env["MSB_SERVER_URL"];
  const url = envUrl ?? lock?.url ?? DEFAULT_SERVER_URL;
  if (lock === undefined && envUrl === undefined) {
    throw new MsbError(
      "SERVER_NOT_RUNNING",
      `msb server is not running for MSB_HOME ${paths.home}; start it with ${
        last === undefined
          ? "`msb server start` (add `--dev` only for a local server without API keys)"
          : `\`${startCommandOf(last)}\` as it was last started`
      }.`,
      { details: { home: paths.home, url } },
    );
  }
  // Same key rules as every other command (MSB_API_KEY, else one signed with this home's secret).
  const { apiKey } = await resolveServerTarget(global, deps);
  const client = createControlPlaneClient({ url, ...(apiKey === undefined ? {} : { apiKey }) });
  const health = await client.health();
  const accelerator = acceleratorOf(health);
  const vmm = vmmStatusOf(health);
  let sandboxes: SandboxStatus[] = [];
  let sandboxesError: StatusReport["sandboxesError"];
  try {
    const result = statusSchema.parse(
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
    ...(vmm === undefined ? {} : { vmm }),
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
