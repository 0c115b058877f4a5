import { randomBytes } from "node:crypto";
import { linkSync, readFileSync, renameSync, unlinkSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { MsbError } from "@msb/errors";
import { z } from "zod";
import { ensurePrivateDir } from "./private-dir.js";
import { isSameLiveProcess, type ProcessTable } from "./proc.js";
import type { ProcessRef } from "./terminate.js";

const childSchema = z.object({ pid: z.number().int().positive(), startTime: z.string() });

/** Contents of `$MSB_HOME/run/server.lock` (JSON). */
export const lockRecordSchema = z.object({
  pid: z.number().int().positive(),
  /** `/proc/<pid>/stat` starttime of the supervisor: a live pid with another one is not ours. */
  startTime: z.string(),
  startedAt: z.string(),
  url: z.string(),
  host: z.string(),
  port: z.number().int(),
  dev: z.boolean(),
  /** True when the server signs keys with a `--key` secret rather than `server.key`. */
  customSecret: z.boolean().optional(),
  /** Current pid of every running service, updated on each (re)start. */
  services: z.record(z.string(), childSchema),
});
export type LockRecord = z.infer<typeof lockRecordSchema>;

/** What the lock file says about this `MSB_HOME`. */
export type LockState =
  | { readonly kind: "free" }
  | { readonly kind: "running"; readonly lock: LockRecord }
  /** The owner is gone (or the file is unreadable); `lock` is set when the file parsed. */
  | { readonly kind: "stale"; readonly lock?: LockRecord };

function writeAtomic(path: string, text: string): void {
  const tmp = `${path}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  writeFileSync(tmp, text, { mode: 0o644 });
  renameSync(tmp, path);
}

export function readLockState(lockFile: string, table: ProcessTable): LockState {
  let text: string;
  try {
    text = readFileSync(lockFile, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { kind: "free" };
    throw err;
  }
  let parsed: z.SafeParseReturnType<unknown, LockRecord>;
  try {
    parsed = lockRecordSchema.safeParse(JSON.parse(text));
  } catch {
    return { kind: "stale" };
  }
  if (!parsed.success) return { kind: "stale" };
  const lock = parsed.data;
  return isSameLiveProcess(table, lock.pid, lock.startTime)
    ? { kind: "running", lock }
    : { kind: "stale", lock };
}

/** The services a lock records, as processes we may signal. */
export function recordedChildren(lock: LockRecord): ProcessRef[] {
  return Object.entries(lock.services).map(([name, c]) => ({
    pid: c.pid,
    startTime: c.startTime,
    label: `${name} (pid ${c.pid})`,
  }));
}

export function alreadyRunningError(lock: LockRecord, home: string): MsbError {
  return new MsbError(
    "SERVER_ALREADY_RUNNING",
    `An msb server is already running for MSB_HOME ${home} (pid ${lock.pid}, ${lock.url}, since ${lock.startedAt}). Next step: stop it with \`msb server stop\`, or use another --home.`,
    { details: { pid: lock.pid, url: lock.url, home } },
  );
}

/** The `msb server start` command line that starts a server the way `lock` records it. */
export function startCommandOf(lock: LockRecord): string {
  return [
    "msb server start",
    ...(lock.dev ? ["--dev"] : []),
    ...(lock.host === "127.0.0.1" ? [] : [`--host ${lock.host}`]),
    ...(lock.port === 5555 ? [] : [`--port ${lock.port}`]),
    ...(lock.customSecret === true ? ["--key …"] : []),
  ].join(" ");
}

/** A held lock: the supervisor updates it as children come and go, and releases it on exit. */
export interface HeldLock {
  readonly record: LockRecord;
  setService(name: string, child: { pid: number; startTime: string } | undefined): void;
  release(): void;
}

export interface AcquireLockOptions {
  readonly lockFile: string;
  readonly pidFile: string;
  readonly home: string;
  readonly table: ProcessTable;
  readonly record: Omit<LockRecord, "services">;
  /**
   * Called with a stale lock before it is taken over, to kill what its dead owner left behind.
   * Runs before the new lock is written.
   */
  readonly onStale: (stale: LockRecord | undefined) => Promise<void>;
}

/**
 * Takes `run/server.lock` for this process. The file appears atomically complete (written
 * aside, then hard-linked into place, which fails if it exists), so two starters racing on
 * one `MSB_HOME` cannot both win. A lock whose pid is gone or has another start time is
 * stale: its leftovers are cleaned by `onStale` and it is taken over.
 */
export async function acquireLock(options: AcquireLockOptions): Promise<HeldLock> {
  const { lockFile, pidFile, table } = options;
  ensurePrivateDir(dirname(lockFile));
  const record: LockRecord = { ...options.record, services: {} };
  for (let attempt = 0; attempt < 5; attempt++) {
    const tmp = `${lockFile}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(record)}\n`, { mode: 0o644 });
    try {
      linkSync(tmp, lockFile);
      unlinkSync(tmp);
      writeAtomic(pidFile, `${record.pid}\n`);
      return createHeldLock(lockFile, pidFile, record);
    } catch (err) {
      unlinkSync(tmp);
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const state = readLockState(lockFile, table);
    if (state.kind === "running") throw alreadyRunningError(state.lock, options.home);
    if (state.kind === "stale") {
      await options.onStale(state.lock);
      // Move the stale file aside: only one racer's rename succeeds; the others retry and
      // then see the winner's fresh lock. Re-read first so a racer that was slow in onStale
      // does not move aside a lock someone took meanwhile (a window of one syscall remains).
      const again = readLockState(lockFile, table);
      if (again.kind !== "stale" || again.lock?.pid !== state.lock?.pid) continue;
      try {
        renameSync(lockFile, `${lockFile}.stale`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
    }
  }
  throw new MsbError(
    "SERVER_ALREADY_RUNNING",
    `Could not take ${lockFile}: another msb server is starting for MSB_HOME ${options.home}. Next step: wait for it, then run \`msb server status\`.`,
    { details: { home: options.home } },
  );
}

function createHeldLock(lockFile: string, pidFile: string, initial: LockRecord): HeldLock {
  let record = initial;
  let released = false;
  const ownsFile = (): boolean => {
    try {
      const onDisk = JSON.parse(readFileSync(lockFile, "utf8")) as {
        pid?: unknown;
        startTime?: unknown;
      };
      return onDisk.pid === record.pid && onDisk.startTime === record.startTime;
    } catch {
      return false;
    }
  };
  return {
    get record() {
      return record;
    },
    setService(name, child) {
      if (released) return;
      const services = { ...record.services };
      if (child === undefined) delete services[name];
      else services[name] = child;
      record = { ...record, services };
      writeAtomic(lockFile, `${JSON.stringify(record)}\n`);
    },
    release() {
      if (released) return;
      released = true;
      if (!ownsFile()) return;
      for (const path of [pidFile, lockFile]) {
        try {
          unlinkSync(path);
        } catch {
          // Already gone.
        }
      }
    },
  };
}
