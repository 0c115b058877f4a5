import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { open, readFile, readdir, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { throwIfAborted } from "@msb/runtime";

/** fsyncs a directory so a rename inside it survives a crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, "r");
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * A temp name that carries its writer's pid — `<prefix><pid>-<12 hex><suffix>` — so that
 * {@link sweepDeadTemps} can tell a file of a writer killed mid-write (kill -9, power cut)
 * from one still being written by a live process.
 */
export function ownedTempName(prefix: string, suffix: string): string {
  return `${prefix}${process.pid}-${randomBytes(6).toString("hex")}${suffix}`;
}

const OWNED_TEMP = /^(?:.*\.|rootfs-[0-9a-f]{16}-|\.rootfs-)(\d+)-[0-9a-f]{12}(?:\.tmp)?$/;

/**
 * Removes the temp files and directories in `dir` (named by {@link ownedTempName}) whose
 * writer is dead: what a crash left half-written. Entries of live writers (another process
 * on the same store) stay. Returns the names removed.
 */
export async function sweepDeadTemps(dir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const pid = OWNED_TEMP.exec(name)?.[1];
    if (pid === undefined || pidAlive(Number(pid))) continue;
    await rm(join(dir, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

/** Writes `data` to `path` atomically: temp file beside it, fsync, rename, fsync the dir. */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = join(dirname(path), ownedTempName(`${basename(path)}.`, ".tmp"));
  try {
    const handle = await open(tmp, "w", 0o644);
    try {
      await handle.writeFile(data);
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dirname(path));
}

/** A zombie (killed, not yet reaped — slow when its parent died too) has finished writing. */
function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.charAt(stat.lastIndexOf(")") + 2) === "Z";
  } catch {
    return false; // no /proc (macOS): trust kill(0)
  }
}

function pidAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return !isZombie(pid);
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Releases a lock taken with {@link acquireFileLock}. */
export type ReleaseLock = () => Promise<void>;

/**
 * A cross-process lock: a file created with O_EXCL holding the owner's pid. A lock whose
 * owner died is taken over; while the owner lives, callers poll (100 ms) until it is gone
 * or `signal` aborts. Node has no flock(2), hence the pid file.
 */
export async function acquireFileLock(
  path: string,
  signal: AbortSignal | undefined,
  operation: string,
): Promise<ReleaseLock> {
  for (;;) {
    throwIfAborted(signal, operation);
    try {
      const handle = await open(path, "wx", 0o644);
      try {
        await handle.writeFile(String(process.pid));
      } finally {
        await handle.close();
      }
      return () => rm(path, { force: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    }
    const owner = await readFile(path, "utf8").catch(() => "");
    const info = await stat(path).catch(() => undefined);
    // An empty file is a lock being written; only treat it as stale after a while.
    const stale =
      info !== undefined &&
      (owner === "" ? Date.now() - info.mtimeMs > 10_000 : !pidAlive(Number(owner)));
    if (stale) {
      await rm(path, { force: true });
      continue;
    }
    await sleep(100, undefined, { signal }).catch(() => undefined);
  }
}
