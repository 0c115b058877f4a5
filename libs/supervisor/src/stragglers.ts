import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import type { ProcessTable } from "./proc.js";
import type { ProcessRef } from "./terminate.js";

function pidFilesUnder(dir: string, depth: number): string[] {
  if (depth < 0) return [];
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return [];
  }
  return entries.flatMap((e) => {
    const path = join(dir, e.name);
    if (e.isDirectory()) return pidFilesUnder(path, depth - 1);
    return e.name.endsWith(".pid") || e.name === "pid" ? [path] : [];
  });
}

function isQemu(argv: readonly string[] | undefined): boolean {
  return argv?.[0] !== undefined && /qemu-system/.test(argv[0]);
}

/**
 * QEMU processes that belong to this `MSB_HOME` and are still alive: those named by pidfiles
 * under `sandboxes/` (vmm-agent writes one per VM), plus any `qemu-system-*` whose command
 * line points into this home's `sandboxes/` (in case a pidfile was never written).
 */
export function findQemuStragglers(table: ProcessTable, sandboxesDir: string): ProcessRef[] {
  const found = new Map<number, ProcessRef>();
  for (const file of pidFilesUnder(sandboxesDir, 4)) {
    let pid: number;
    try {
      pid = Number(readFileSync(file, "utf8").trim());
    } catch {
      continue;
    }
    if (!Number.isInteger(pid) || pid <= 0) continue;
    const argv = table.cmdline(pid);
    if (!isQemu(argv)) continue;
    const startTime = table.info(pid)?.startTime;
    found.set(pid, {
      pid,
      ...(startTime === undefined ? {} : { startTime }),
      label: `qemu (pid ${pid})`,
    });
  }
  const marker = `${sandboxesDir}/`;
  for (const pid of table.pids()) {
    if (found.has(pid)) continue;
    const argv = table.cmdline(pid);
    if (!isQemu(argv) || !argv?.some((a) => a.includes(marker))) continue;
    const startTime = table.info(pid)?.startTime;
    found.set(pid, {
      pid,
      ...(startTime === undefined ? {} : { startTime }),
      label: `qemu (pid ${pid})`,
    });
  }
  return [...found.values()];
}
