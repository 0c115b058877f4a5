import type { MsbPaths } from "./home.js";
import { alreadyRunningError, readLockState, type LockRecord } from "./lock.js";
import { isSameLiveProcess, type ProcessTable } from "./proc.js";
import { SUPERVISOR_ENV } from "./services.js";
import { findQemuStragglers } from "./stragglers.js";
import { terminateAll, type ProcessRef } from "./terminate.js";

type HomePaths = Pick<MsbPaths, "home" | "sandboxesDir">;

function serviceName(table: ProcessTable, pid: number): string {
  const argv = table.cmdline(pid) ?? [];
  for (const arg of argv) {
    const m = /apps\/([a-z-]+)\/dist\/main\.js$/.exec(arg);
    if (m?.[1] !== undefined) return m[1];
  }
  return "msb service";
}

/**
 * Services of this `MSB_HOME` whose supervisor is gone. A process counts only if it proves it
 * belongs here (MSB_HOME in its environment) and is either recorded in the dead server's lock
 * with the same pid and `/proc` start time, or names a supervisor (MSB_SUPERVISOR) that is no
 * longer that process. A foreign process, or a service of a live supervisor, is never listed.
 */
export function findServiceLeftovers(
  table: ProcessTable,
  home: string,
  lock: LockRecord | undefined,
): ProcessRef[] {
  const found = new Map<number, ProcessRef>();
  const ours = (pid: number) => pid !== process.pid && table.environ(pid, "MSB_HOME") === home;
  for (const [name, child] of Object.entries(lock?.services ?? {})) {
    if (!isSameLiveProcess(table, child.pid, child.startTime) || !ours(child.pid)) continue;
    found.set(child.pid, { ...child, label: `${name} (pid ${child.pid})` });
  }
  for (const pid of table.pids()) {
    if (found.has(pid) || !ours(pid)) continue;
    const owner = table.environ(pid, SUPERVISOR_ENV);
    if (owner === undefined) continue;
    const [ownerPid, ownerStart] = owner.split(":");
    if (isSameLiveProcess(table, Number(ownerPid), ownerStart)) continue;
    const startTime = table.info(pid)?.startTime;
    if (startTime === undefined) continue;
    found.set(pid, { pid, startTime, label: `${serviceName(table, pid)} (pid ${pid})` });
  }
  return [...found.values()];
}

/**
 * Kills what a dead supervisor left behind: its services (see `findServiceLeftovers`) and
 * QEMU processes of this `MSB_HOME`. Returns what was killed.
 */
export async function killLeftovers(
  table: ProcessTable,
  paths: HomePaths,
  lock: LockRecord | undefined,
): Promise<string[]> {
  const services = findServiceLeftovers(table, paths.home, lock);
  const killedServices = await terminateAll(table, services, { graceMs: 10_000 });
  const killedQemu = await terminateAll(table, findQemuStragglers(table, paths.sandboxesDir), {
    graceMs: 5_000,
  });
  return [...killedServices, ...killedQemu];
}

/** What `takeOverStale` found: the dead server's pid (when its lock said) and what it killed. */
export interface Takeover {
  readonly stalePid?: number;
  readonly killed: readonly string[];
}

/**
 * Run before a start checks its port: a server running for this home is
 * SERVER_ALREADY_RUNNING; a dead one's leftovers (its services, and its VMs when its lock is
 * there) are killed now, so that a service that outlived its supervisor does not hold the port
 * the new server needs. A home without a lock only loses services that name a dead supervisor.
 */
export async function takeOverStale(
  table: ProcessTable,
  paths: HomePaths & Pick<MsbPaths, "lockFile">,
): Promise<Takeover> {
  const state = readLockState(paths.lockFile, table);
  if (state.kind === "running") throw alreadyRunningError(state.lock, paths.home);
  if (state.kind === "free") {
    const orphans = findServiceLeftovers(table, paths.home, undefined);
    return { killed: await terminateAll(table, orphans, { graceMs: 10_000 }) };
  }
  const killed = await killLeftovers(table, paths, state.lock);
  return { ...(state.lock === undefined ? {} : { stalePid: state.lock.pid }), killed };
}
