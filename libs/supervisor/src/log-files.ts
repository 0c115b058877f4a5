import { closeSync, openSync, readSync, statSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { formatLogEntry, parseLogLine, WARN_LEVEL, type LogEntry } from "./log-lines.js";

/** Reads at most the last `maxBytes` of a file; missing file → "". */
function readEnd(path: string, maxBytes: number): { text: string; size: number } {
  let fd: number;
  try {
    fd = openSync(path, "r");
  } catch {
    return { text: "", size: 0 };
  }
  try {
    const size = statSync(path).size;
    const start = Math.max(0, size - maxBytes);
    const buffer = Buffer.alloc(size - start);
    readSync(fd, buffer, 0, buffer.length, start);
    let text = buffer.toString("utf8");
    // Drop a partial first line when we started mid-file.
    if (start > 0) text = text.slice(text.indexOf("\n") + 1);
    return { text, size };
  } finally {
    closeSync(fd);
  }
}

/**
 * The last `lines` entries of a service log, oldest first. Lines that are not pino JSON are what
 * a service printed outside its logger (a crash trace on stderr), so they count as warnings.
 */
export function readLogEntries(
  path: string,
  svc: string,
  lines: number,
): { entries: LogEntry[]; size: number } {
  // Log lines are rarely over 1 KiB; read generously and cut.
  const { text, size } = readEnd(path, Math.max(64 * 1024, lines * 2048));
  const all = text.split("\n").filter((l) => l !== "");
  return {
    entries: all
      .slice(Math.max(0, all.length - lines))
      .map((l) => parseLogLine(l, svc, WARN_LEVEL)),
    size,
  };
}

/** The last `lines` lines of a log, formatted for people (for error messages). */
export function readLogTail(path: string, lines: number): string[] {
  const svc = path.replace(/^.*\//, "").replace(/\.log$/, "");
  return readLogEntries(path, svc, lines).entries.map(formatLogEntry);
}

/** Merges entries of several logs by time (entries without a time keep their file order). */
export function mergeByTime(perSource: readonly LogEntry[][]): LogEntry[] {
  return perSource
    .flatMap((entries, source) => entries.map((entry, index) => ({ entry, source, index })))
    .sort((a, b) => {
      if (a.entry.time !== "" && b.entry.time !== "" && a.entry.time !== b.entry.time) {
        return a.entry.time < b.entry.time ? -1 : 1;
      }
      return a.source === b.source ? a.index - b.index : a.source - b.source;
    })
    .map((x) => x.entry);
}

export interface FollowTarget {
  readonly path: string;
  readonly svc: string;
  /** Byte offset already shown. */
  offset: number;
}

/**
 * Prints lines appended to the logs until `signal` aborts. Polls the sizes (logs are local
 * files written by our own supervisor; polling also survives a file that does not exist yet).
 */
export async function followLogs(
  targets: FollowTarget[],
  onEntry: (entry: LogEntry) => void,
  signal: AbortSignal,
  pollMs = 250,
): Promise<void> {
  const partial = new Map<string, string>();
  while (!signal.aborted) {
    for (const target of targets) {
      let size: number;
      try {
        size = statSync(target.path).size;
      } catch {
        continue;
      }
      if (size < target.offset) target.offset = 0; // truncated or replaced
      if (size === target.offset) continue;
      const fd = openSync(target.path, "r");
      try {
        const buffer = Buffer.alloc(size - target.offset);
        readSync(fd, buffer, 0, buffer.length, target.offset);
        target.offset = size;
        const text = (partial.get(target.path) ?? "") + buffer.toString("utf8");
        const lines = text.split("\n");
        partial.set(target.path, lines.pop() ?? "");
        for (const line of lines)
          if (line !== "") onEntry(parseLogLine(line, target.svc, WARN_LEVEL));
      } finally {
        closeSync(fd);
      }
    }
    await sleep(pollMs, undefined, { signal }).catch(() => undefined);
  }
}
