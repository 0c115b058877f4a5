import { execFile } from "node:child_process";
import { constants } from "node:fs";
import { chmod, lchown, lstat, open, readdir, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { promisify } from "node:util";
import { MsbError } from "@msb/errors";
import type { HeldVolume } from "../volumes/held-volume.js";

// What the vmm-agent changes on host files for VM uids, and how it takes it back: POSIX ACL
// grants on volumes and on the way to a VM's directory, MSB_HOME's modes, and files a
// released uid still owns.

const run = promisify(execFile);

/**
 * One volume directory a dedicated uid was granted, who owns it, and which inode it was (a
 * record read back after a crash is undone only on that same inode, never on whatever the
 * path names by then).
 */
export interface Grant {
  readonly dir: string;
  readonly owner: { readonly uid: number; readonly gid: number };
  readonly dev?: number;
  readonly ino?: number;
}

export async function setfacl(args: string[]): Promise<void> {
  try {
    await run("setfacl", args, { timeout: 30_000 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    const why = e.code === "ENOENT" ? "setfacl is not installed (Debian package acl)" : e.stderr;
    throw new MsbError(
      "VM_BOOT_FAILED",
      `Could not change a POSIX ACL (setfacl ${args.join(" ")}): ${String(why ?? e.message).trim()}. VMs that run unprivileged need the acl package and a filesystem with ACLs.`,
      { cause: err },
    );
  }
}

/**
 * Lets the shared VM gid search (x only: no listing) every directory above `path` that
 * others cannot search, so a VM's QEMU reaches its own directory (sockets, scratch disk)
 * under e.g. a 0700 home. Only a search right on those directories is added; files in them
 * stay as readable as their own modes say. `done` remembers directories already granted by
 * inode and birth time, not by path: a directory deleted and made again (a namespace's, a
 * template's rebuilt under the same key) has no ACL and is granted again.
 */
export async function grantSearch(
  path: string,
  sharedGid: number,
  done: Set<string>,
): Promise<void> {
  let dir = dirname(path);
  for (;;) {
    const st = await stat(dir);
    const id = `${dir}\0${st.dev}:${st.ino}:${st.birthtimeMs}`;
    if (!done.has(id)) {
      if ((st.mode & 0o001) === 0) await setfacl(["-m", `g:${sharedGid}:--x`, dir]);
      done.add(id);
    }
    const parent = dirname(dir);
    if (parent === dir) return;
    dir = parent;
  }
}

/**
 * Lets exactly `uid` search (x only) every directory above `path` that others cannot search,
 * so that the VM's QEMU reaches its own directory (it binds its sockets and opens its scratch
 * disk there by path) and nothing else: no group of all VMs gets in. Returns the directories
 * granted, for `revokeSearch` at release.
 */
export async function grantSearchFor(uid: number, path: string): Promise<string[]> {
  const granted: string[] = [];
  let dir = dirname(path);
  for (;;) {
    const st = await stat(dir);
    if ((st.mode & 0o001) === 0) {
      await setfacl(["-m", `u:${uid}:--x`, dir]);
      granted.push(dir);
    }
    const parent = dirname(dir);
    if (parent === dir) return granted;
    dir = parent;
  }
}

export async function revokeSearch(uid: number, dirs: readonly string[]): Promise<void> {
  for (const dir of dirs) await setfacl(["-x", `u:${uid}`, dir]).catch(() => undefined);
}

/**
 * MSB_HOME 0700 and no rights for others on its entries, and no search ACL for the shared VM
 * gid on it or above it (what an earlier version granted).
 */
export async function secureHome(home: string, sharedGid: number): Promise<void> {
  const st = await lstat(home).catch(() => undefined);
  if (st?.isDirectory() !== true) return;
  if ((st.mode & 0o777) !== 0o700) await chmod(home, 0o700);
  for (const name of await readdir(home)) {
    const entry = await lstat(join(home, name)).catch(() => undefined);
    if (entry === undefined || entry.isSymbolicLink() || (entry.mode & 0o007) === 0) continue;
    await chmod(join(home, name), entry.mode & 0o7770);
  }
  for (let dir = home; ; dir = dirname(dir)) {
    await setfacl(["-x", `g:${sharedGid}`, dir]).catch(() => undefined);
    if (dirname(dir) === dir) return;
  }
}

/**
 * Gives back to the directory's owner every file a dedicated uid created in a volume, so
 * that a later VM given the same uid cannot reach them. Never follows symlinks.
 */
export async function reownTree(dir: string, uid: number, owner: { uid: number; gid: number }) {
  const entries = await readdir(dir, { withFileTypes: true }).catch(() => []);
  for (const entry of entries) {
    const path = join(dir, entry.name);
    const st = await lstat(path).catch(() => undefined);
    if (st === undefined) continue;
    if (st.isDirectory()) await reownTree(path, uid, owner);
    if (st.uid === uid) {
      await lchown(path, owner.uid, owner.gid).catch(() => undefined);
    }
  }
}

/**
 * Gives to root (0600 for a file, 0700 for a directory) every entry under `path` owned by
 * `uid`, never following a symlink (a symlink itself only changes owner). Missing is fine.
 */
export async function reclaimTree(path: string, uid: number): Promise<void> {
  const st = await lstat(path).catch(() => undefined);
  if (st === undefined) return;
  if (st.isDirectory()) {
    const entries = await readdir(path).catch(() => []);
    for (const name of entries) await reclaimTree(join(path, name), uid);
  }
  if (st.uid !== uid) return;
  if (!st.isFile() && !st.isDirectory()) {
    await lchown(path, 0, 0).catch(() => undefined);
    return;
  }
  const handle = await open(
    path,
    constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK,
  ).catch(() => undefined);
  if (handle === undefined) return;
  try {
    const now = await handle.stat();
    if (now.ino !== st.ino || now.dev !== st.dev) return;
    await handle.chown(0, 0);
    await handle.chmod(now.isDirectory() ? 0o700 : 0o600);
  } finally {
    await handle.close();
  }
}

/** Takes grants back through the volumes still held (the inode granted, not its path). */
export async function undoHeldGrants(
  uid: number,
  made: readonly Grant[],
  held: readonly HeldVolume[],
) {
  for (const grant of made) {
    const vol = held.find((h) => h.dev === grant.dev && h.ino === grant.ino);
    if (vol === undefined) continue;
    await setfacl(["-x", `u:${uid}`, vol.procPath]).catch(() => undefined);
    await reownTree(vol.procPath, uid, grant.owner);
  }
}

/**
 * Takes back grants recorded by a vmm-agent that died: each directory is opened without
 * following a symlink and acted on only when it is still the inode that was granted.
 */
export async function undoRecordedGrants(uid: number, made: readonly Grant[]): Promise<string[]> {
  const undone: string[] = [];
  for (const grant of made) {
    const handle = await open(
      grant.dir,
      constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW,
    ).catch(() => undefined);
    if (handle === undefined) continue;
    try {
      const st = await handle.stat();
      if (grant.dev !== undefined && (st.dev !== grant.dev || st.ino !== grant.ino)) continue;
      const procPath = `/proc/${process.pid}/fd/${handle.fd}`;
      await setfacl(["-x", `u:${uid}`, procPath]).catch(() => undefined);
      await reownTree(procPath, uid, grant.owner);
      undone.push(grant.dir);
    } finally {
      await handle.close();
    }
  }
  return undone;
}
