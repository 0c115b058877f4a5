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
  // Wait until each process is gone from /proc, not merely a zombie: the leader of a
  // multi-threaded process (node) shows `Z` while its other threads still exit and hold its
  // file descriptors, so its listening socket outlives that state for a moment and a new
  // server's bind would fail. A parent reaps the group only when all of it has exited. Don't
  // wait forever on a zombie whose parent is stuck.
  const present = () =>
    alive.filter((r) => {
      const info = table.info(r.pid);
      return info !== undefined && (r.startTime === undefined || info.startTime === r.startTime);
    });
  const killDeadline = Date.now() + 5_000;
  while (present().length > 0 && Date.now() < killDeadline) await sleep(pollMs);
  return alive.map((r) => r.label);
}
