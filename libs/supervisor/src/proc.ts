import { readFileSync, readdirSync, readlinkSync } from "node:fs";

/** What the CLI needs to know about a process, read from `/proc`. */
export interface ProcessInfo {
  readonly pid: number;
  /** Field 22 of `/proc/<pid>/stat` (clock ticks since boot): with the pid, a unique identity. */
  readonly startTime: string;
  /** Single-letter state (`R`, `S`, `Z`, …). */
  readonly state: string;
  readonly ppid: number;
}

/**
 * The process table seam: the real one reads `/proc`, unit tests pass a fake. Every method
 * answers `undefined`/empty for a process that is gone or unreadable instead of throwing.
 */
export interface ProcessTable {
  info(pid: number): ProcessInfo | undefined;
  cmdline(pid: number): readonly string[] | undefined;
  /** One variable of the process's initial environment (readable for our own user or root). */
  environ(pid: number, name: string): string | undefined;
  pids(): readonly number[];
  /** Targets of `/proc/<pid>/fd/*` (`socket:[123]`, paths, …). */
  fdTargets(pid: number): readonly string[];
  /** Sends a signal; false when the process is gone or not ours. */
  kill(pid: number, signal: NodeJS.Signals | 0): boolean;
}

/** Parses `/proc/<pid>/stat`; `comm` may hold spaces and parentheses, so split at the last `)`. */
export function parseProcStat(pid: number, text: string): ProcessInfo | undefined {
  const close = text.lastIndexOf(")");
  if (close < 0) return undefined;
  const fields = text
    .slice(close + 2)
    .trim()
    .split(/\s+/);
  // fields[0] is field 3 (state); starttime is field 22.
  const state = fields[0];
  const ppid = Number(fields[1]);
  const startTime = fields[19];
  if (state === undefined || startTime === undefined || !Number.isInteger(ppid)) return undefined;
  return { pid, state, ppid, startTime };
}

/** True when `pid` names a live (non-zombie) process that started at `startTime`. */
export function isSameLiveProcess(
  table: ProcessTable,
  pid: number,
  startTime: string | undefined,
): boolean {
  const info = table.info(pid);
  if (info === undefined || info.state === "Z" || info.state === "X") return false;
  return startTime === undefined || info.startTime === startTime;
}

function readOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

export function createProcfsTable(procRoot = "/proc"): ProcessTable {
  return {
    info(pid) {
      const text = readOrUndefined(`${procRoot}/${pid}/stat`);
      return text === undefined ? undefined : parseProcStat(pid, text);
    },
    cmdline(pid) {
      const text = readOrUndefined(`${procRoot}/${pid}/cmdline`);
      if (text === undefined) return undefined;
      return text.split("\0").filter((part, i, all) => part !== "" || i < all.length - 1);
    },
    environ(pid, name) {
      const text = readOrUndefined(`${procRoot}/${pid}/environ`);
      if (text === undefined) return undefined;
      const prefix = `${name}=`;
      return text
        .split("\0")
        .find((entry) => entry.startsWith(prefix))
        ?.slice(prefix.length);
    },
    pids() {
      try {
        return readdirSync(procRoot)
          .filter((name) => /^\d+$/.test(name))
          .map(Number);
      } catch {
        return [];
      }
    },
    fdTargets(pid) {
      const dir = `${procRoot}/${pid}/fd`;
      let names: string[];
      try {
        names = readdirSync(dir);
      } catch {
        return [];
      }
      const targets: string[] = [];
      for (const name of names) {
        try {
          targets.push(readlinkSync(`${dir}/${name}`));
        } catch {
          // The fd closed between readdir and readlink.
        }
      }
      return targets;
    },
    kill(pid, signal) {
      try {
        process.kill(pid, signal);
        return true;
      } catch {
        return false;
      }
    },
  };
}
