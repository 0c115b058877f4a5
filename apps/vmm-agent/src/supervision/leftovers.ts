import { constants } from "node:fs";
import { open, readdir, rm, type FileHandle } from "node:fs/promises";
import { basename, join, relative } from "node:path";
import type { ProcessTable } from "./process-table.js";
import { TEMP_FILE_MARKER, TRANSIENT_FILES, VM_FILES } from "./vm-files.js";

/** What was found and done in one VM directory left by an earlier vmm-agent. */
export interface Leftover {
  readonly vmId: string;
  readonly dir: string;
  /** pid from the pidfile, when there was one. */
  readonly pid?: number;
  /** True when that pid was a live QEMU of this VM and was killed. */
  readonly killed: boolean;
  /** Files removed (names relative to the VM directory). */
  readonly removed: readonly string[];
}

export interface ReapLeftoversOptions {
  readonly sandboxesDir: string;
  readonly processes: ProcessTable;
  /** How long a killed process may take to disappear before we move on. Default 3 s. */
  readonly waitGoneMs?: number;
}

/**
 * True when `argv` is a QEMU started for the VM whose directory is `dir`: its binary is a
 * `qemu-system-*` and one of its arguments names a file in that directory. A recycled pid
 * that now belongs to anything else is therefore never killed.
 */
export function isQemuOfVm(argv: readonly string[], dir: string): boolean {
  const bin = argv[0];
  if (bin === undefined || !basename(bin).startsWith("qemu-system")) return false;
  const prefix = dir.endsWith("/") ? dir : `${dir}/`;
  return argv.some((arg) => arg.includes(prefix));
}

async function listDirs(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { withFileTypes: true });
    return entries.filter((e) => e.isDirectory()).map((e) => join(dir, e.name));
  } catch {
    return [];
  }
}

/**
 * The pid in a pidfile. The VM's directory belongs to the VM's uid, so the "pidfile" may be a
 * symlink or a FIFO planted to hang or mislead the vmm-agent: only a small regular file,
 * opened without following links or blocking, is read.
 */
async function readPid(file: string): Promise<number | undefined> {
  let handle: FileHandle | undefined;
  try {
    handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    const st = await handle.stat();
    if (!st.isFile() || st.size > 64) return undefined;
    const pid = Number((await handle.readFile("utf8")).trim());
    return Number.isInteger(pid) && pid > 1 ? pid : undefined;
  } catch {
    return undefined;
  } finally {
    await handle?.close();
  }
}

async function waitGone(
  processes: ProcessTable,
  pid: number,
  dir: string,
  waitMs: number,
): Promise<void> {
  const until = Date.now() + waitMs;
  while (Date.now() < until) {
    const argv = await processes.cmdline(pid);
    if (argv === undefined || !isQemuOfVm(argv, dir)) return;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** One VM directory: kill its QEMU if the pidfile names a live one, then remove transient files. */
async function reapDir(
  sandboxesDir: string,
  dir: string,
  options: ReapLeftoversOptions,
): Promise<Leftover | undefined> {
  let names: string[];
  try {
    names = await readdir(dir);
  } catch {
    return undefined;
  }
  const transient = names.filter(
    (n) => TRANSIENT_FILES.includes(n) || n.includes(TEMP_FILE_MARKER),
  );
  if (transient.length === 0) return undefined;

  const pid = names.includes(VM_FILES.pidfile)
    ? await readPid(join(dir, VM_FILES.pidfile))
    : undefined;
  let killed = false;
  if (pid !== undefined) {
    const argv = await options.processes.cmdline(pid);
    if (argv !== undefined && isQemuOfVm(argv, dir)) {
      options.processes.kill(pid, "SIGKILL");
      killed = true;
      await waitGone(options.processes, pid, dir, options.waitGoneMs ?? 3_000);
    }
  }
  for (const name of transient) await rm(join(dir, name), { force: true, recursive: true });
  return {
    vmId: relative(sandboxesDir, dir),
    dir,
    ...(pid === undefined ? {} : { pid }),
    killed,
    removed: transient,
  };
}

/**
 * Finds what an earlier vmm-agent left under `$MSB_HOME/sandboxes` (VM ids are `name` or
 * `namespace/name`): kills every QEMU whose pidfile is there and whose command line proves it
 * belongs to that VM, and removes pidfiles, sockets and temp files. Scratch disks and console
 * logs stay: they are the state of a named sandbox. Re-adopting live VMs is not attempted:
 * their guest connection died with the old process.
 */
export async function reapLeftovers(options: ReapLeftoversOptions): Promise<Leftover[]> {
  const found: Leftover[] = [];
  for (const first of await listDirs(options.sandboxesDir)) {
    const own = await reapDir(options.sandboxesDir, first, options);
    if (own !== undefined) found.push(own);
    for (const second of await listDirs(first)) {
      const nested = await reapDir(options.sandboxesDir, second, options);
      if (nested !== undefined) found.push(nested);
    }
  }
  return found;
}
