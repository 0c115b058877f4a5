import type { ProcessInfo, ProcessTable } from "../proc.js";

export interface FakeProcess {
  readonly startTime: string;
  readonly state?: string;
  readonly argv?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly fds?: readonly string[];
}

/** An in-memory process table for unit tests: kill(SIGTERM/SIGKILL) removes the process. */
export function createFakeProcessTable(initial: Record<number, FakeProcess> = {}) {
  const procs = new Map<number, FakeProcess>(
    Object.entries(initial).map(([pid, p]) => [Number(pid), p]),
  );
  const signals: { pid: number; signal: NodeJS.Signals | 0 }[] = [];
  const table: ProcessTable = {
    info(pid): ProcessInfo | undefined {
      const p = procs.get(pid);
      return p === undefined
        ? undefined
        : { pid, startTime: p.startTime, state: p.state ?? "S", ppid: 1 };
    },
    cmdline: (pid) => procs.get(pid)?.argv,
    environ: (pid, name) => procs.get(pid)?.env?.[name],
    pids: () => [...procs.keys()],
    fdTargets: (pid) => procs.get(pid)?.fds ?? [],
    kill(pid, signal) {
      if (!procs.has(pid)) return false;
      signals.push({ pid, signal });
      if (signal !== 0) procs.delete(pid);
      return true;
    },
  };
  return { table, procs, signals };
}
