import { Command } from "commander";
import { printJson, type CliDeps } from "../../cli/context.js";
import { formatBytes, formatTable } from "../../cli/table.js";
import type { Project } from "../../project/sandboxfile.js";
import { connect, sandboxMetrics, type SandboxMetrics } from "../../project/remote.js";
import { readState, type StateEntry } from "../../project/state.js";
import { projectContext, withFileOption, withNamespaceOption } from "./shared.js";

export interface StatusRow {
  readonly name: string;
  /** Server state (`running`, `stopped`, `failed`, …), or `not started`. */
  readonly state: string;
  readonly reason: string | null;
  readonly image: string;
  readonly cpu_usage: number | null;
  readonly memory_usage: number | null;
  readonly disk_usage: number | null;
  readonly ports: readonly string[];
  /** Seconds since this project started it, while running. */
  readonly uptime_s: number | null;
  /** In the state file but no longer in the Sandboxfile. */
  readonly orphan: boolean;
}

/** Joins the file, the state file and `sandbox.metrics.get` into one row per sandbox. */
export function statusRows(
  project: Project,
  entries: readonly StateEntry[],
  metrics: readonly SandboxMetrics[],
  namespace: string,
  now: Date,
): StatusRow[] {
  const mine = entries.filter((e) => e.namespace === namespace);
  const names = [
    ...project.sandboxes.map((s) => s.name),
    ...mine.map((e) => e.name).filter((n) => !project.sandboxes.some((s) => s.name === n)),
  ];
  return names.map((name) => {
    const sb = project.sandboxes.find((s) => s.name === name);
    const entry = mine.find((e) => e.name === name);
    const m = metrics.find((x) => x.name === name);
    const running = m?.running === true;
    const since = entry === undefined ? NaN : Date.parse(entry.startedAt);
    return {
      name,
      state: m === undefined ? "not started" : (m.state ?? (running ? "running" : "stopped")),
      reason: m?.reason ?? null,
      image: sb?.image ?? entry?.config.image ?? m?.image ?? "-",
      cpu_usage: running ? (m.cpu_usage ?? null) : null,
      memory_usage: running ? (m.memory_usage ?? null) : null,
      disk_usage: m?.disk_usage ?? null,
      ports: sb?.ports ?? entry?.config.ports ?? [],
      uptime_s:
        running && Number.isFinite(since)
          ? Math.max(0, Math.round((now.getTime() - since) / 1000))
          : null,
      orphan: sb === undefined,
    };
  });
}

/** `42s`, `5m3s`, `2h10m`, `3d4h`. */
export function formatUptime(seconds: number | null): string {
  if (seconds === null) return "-";
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${seconds % 60}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d${Math.floor((seconds % 86400) / 3600)}h`;
}

export function renderStatusRows(rows: readonly StatusRow[]): string {
  if (rows.length === 0) return "no sandboxes in the Sandboxfile\n";
  const table = formatTable(
    ["name", "state", "image", "cpu", "memory", "disk", "ports", "uptime"],
    rows.map((r) => [
      r.orphan ? `${r.name} (removed from file)` : r.name,
      r.reason === null ? r.state : `${r.state}: ${r.reason}`,
      r.image,
      r.cpu_usage === null ? "-" : `${r.cpu_usage.toFixed(1)}%`,
      r.memory_usage === null ? "-" : `${r.memory_usage} MiB`,
      r.disk_usage === null ? "-" : formatBytes(r.disk_usage),
      r.ports.join(",") || "-",
      formatUptime(r.uptime_s),
    ]),
  );
  return `${table}\n`;
}

export function statusCommand(deps: CliDeps): Command {
  return withNamespaceOption(
    withFileOption(
      new Command("status")
        .description("state and usage of the project's sandboxes")
        .argument("[names...]", "only these sandboxes"),
    ),
  )
    .addHelpText(
      "after",
      `
Columns: name, state (from the server; "not started" if it does not know the sandbox), image,
cpu (%), memory, disk (writable disk), ports (from the file), uptime (since this project
started it, from .msb/state.json).

Examples:
  msb status
  msb status --json | jq '.sandboxes[] | select(.state == "running") | .name'

Exit codes: 0 · 2 invalid Sandboxfile · 4 no Sandboxfile · 10 server not running.`,
    )
    .action(
      async (names: string[], options: { file?: string; namespace: string }, cmd: Command) => {
        const { global, project, namespace } = projectContext(cmd, options, deps);
        const client = await connect(global, deps, 10_000);
        const metrics = await sandboxMetrics(client, namespace);
        const rows = statusRows(
          project,
          readState(project.dir).entries,
          metrics,
          namespace,
          new Date(),
        ).filter((r) => names.length === 0 || names.includes(r.name));
        if (global.json) printJson(deps.io, { namespace, file: project.file, sandboxes: rows });
        else deps.io.out(renderStatusRows(rows));
      },
    );
}
