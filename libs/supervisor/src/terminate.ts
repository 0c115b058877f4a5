import { setTimeout as sleep } from "node:timers/promises";
import { isSameLiveProcess, type ProcessTable } from "./proc.js";

/** A process we may signal: the pid plus its start time, so a recycled pid is never hit. */
export interface ProcessRef {
  readonly pid: number;
  readonly startTime?: string;
  /** Shown in messages and logs. */
  readonly label: string;
}

export interface TerminateOptions {
  /** Time between SIGTERM and SIGKILL. */
  readonly graceMs: number;
  /** Poll interval while waiting for exits. */
  readonly pollMs?: number;
}

/**
 * SIGTERM every live process in `refs`, wait up to `graceMs` for them to go, SIGKILL the
 * rest and wait for those too. Returns the labels of processes that were alive when called.
 */
export async function terminateAll(
  table: ProcessTable,
  refs: readonly ProcessRef[],
  options: TerminateOptions,
): Promise<string[]> {
  const pollMs = options.pollMs ?? 50;
  const alive = refs.filter((r) => isSameLiveProcess(table, r.pid, r.startTime));
  for (const ref of alive) table.kill(ref.pid, "SIGTERM");
  const deadline = Date.now() + options.graceMs;
  const stillAlive = () => alive.filter((r) => isSameLiveProcess(table, r.pid, r.startTime));
  while (stillAlive().length > 0 && Date.now() < deadline) await sleep(pollMs);
  for (const ref of stillAlive()) table.kill(ref.pid, "SIGKILL");
  // A SIGKILLed process disappears once its parent reaps it; don't wait forever on a zombie
  // whose parent is stuck (isSameLiveProcess already treats zombies as gone).
  const killDeadline = Date.now() + 5_000;
  while (stillAlive().length > 0 && Date.now() < killDeadline) await sleep(pollMs);
  return alive.map((r) => r.label);
}
