import { readFile } from "node:fs/promises";

/** The host's processes, as far as the vmm-agent needs them; a seam for unit tests. */
export interface ProcessTable {
  /** argv of a live process, or undefined when there is no such process (or it is a zombie). */
  cmdline(pid: number): Promise<string[] | undefined>;
  /** Sends a signal; a process that is already gone is not an error. */
  kill(pid: number, signal: NodeJS.Signals): void;
}

/** The real process table, read from /proc. */
export function createProcProcessTable(): ProcessTable {
  return {
    async cmdline(pid) {
      try {
        const raw = await readFile(`/proc/${pid}/cmdline`, "utf8");
        // A zombie has an empty cmdline: it is dead, only waiting for its parent.
        if (raw.length === 0) return undefined;
        return raw.replace(/\0$/, "").split("\0");
      } catch {
        return undefined;
      }
    },
    kill(pid, signal) {
      try {
        process.kill(pid, signal);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ESRCH") throw err;
      }
    },
  };
}

/** Reads `VmRSS` from /proc/<pid>/status, in bytes; undefined when the process is gone. */
export async function readHostRssBytes(pid: number): Promise<number | undefined> {
  try {
    const status = await readFile(`/proc/${pid}/status`, "utf8");
    const match = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
    return match?.[1] === undefined ? undefined : Number(match[1]) * 1024;
  } catch {
    return undefined;
  }
}
