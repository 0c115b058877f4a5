import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { lstat, open, rename, rm } from "node:fs/promises";
import { promisify } from "node:util";
import { MsbError } from "@msb/errors";
import { TEMP_FILE_MARKER } from "./supervision/vm-files.js";

const run = promisify(execFile);

/**
 * Makes sure a VM's scratch disk exists: a sparse file of `sizeBytes` formatted as ext4 by
 * the host (the guest never runs mkfs). The guest sees exactly this size, so writing past the
 * quota fails in the guest with ENOSPC and the host only pays for blocks actually written.
 * An existing disk is kept when `keep` is set (a named sandbox's state survives stop/start).
 */
export async function ensureScratchDisk(
  path: string,
  sizeBytes: number,
  options: { keep: boolean; signal: AbortSignal },
): Promise<{ created: boolean }> {
  if (options.keep) {
    // lstat: the VM's uid owns the directory; a symlink in place of the disk is not a disk.
    const existing = await lstat(path).catch(() => undefined);
    if (existing?.isFile() === true) return { created: false };
  }
  const tmp = `${path}${TEMP_FILE_MARKER}${randomBytes(4).toString("hex")}`;
  try {
    const handle = await open(tmp, "wx", 0o600);
    try {
      await handle.truncate(sizeBytes);
    } finally {
      await handle.close();
    }
    // -m 0: no blocks reserved for root, so the quota is what the sandbox can use.
    // lazy init: the sparse file stays sparse and mkfs takes milliseconds.
    await run(
      "mkfs.ext4",
      ["-q", "-F", "-m", "0", "-E", "lazy_itable_init=1,lazy_journal_init=1", tmp],
      { signal: options.signal, timeout: 60_000 },
    );
    await rename(tmp, path);
    return { created: true };
  } catch (err) {
    await rm(tmp, { force: true });
    if (options.signal.aborted) throw options.signal.reason;
    throw new MsbError(
      "VM_BOOT_FAILED",
      `Could not create the ${sizeBytes}-byte scratch disk: ${(err as Error).message}. Check free space under MSB_HOME and that mkfs.ext4 (e2fsprogs) is installed.`,
      { cause: err },
    );
  }
}
