import { join } from "node:path";

/** File names inside a VM's directory (`$MSB_HOME/sandboxes/<namespace>/<name>/`). */
export const VM_FILES = {
  pidfile: "qemu.pid",
  agentSocket: "agent.sock",
  qmpSocket: "qmp.sock",
  consoleLog: "console.log",
  scratchDisk: "scratch.ext4",
  /** Unix socket a template's QEMU sends its snapshot to (exists only while it does). */
  migrateSocket: "migrate.sock",
} as const;

/** Files that never outlive the VM process (the scratch disk and console log do). */
export const TRANSIENT_FILES: readonly string[] = [
  VM_FILES.pidfile,
  VM_FILES.agentSocket,
  VM_FILES.qmpSocket,
  VM_FILES.migrateSocket,
];

/** Temporary files are written as `<name>.tmp-<random>` and renamed into place. */
export const TEMP_FILE_MARKER = ".tmp-";

const SEGMENT = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/**
 * True for ids of the form `name` or `namespace/name` whose segments are safe directory
 * names (no `..`, no slashes beyond the one separator, no leading dot).
 */
export function isValidVmId(vmId: string): boolean {
  const parts = vmId.split("/");
  return parts.length >= 1 && parts.length <= 2 && parts.every((p) => SEGMENT.test(p));
}

/** The directory of a VM; `vmId` must have passed `isValidVmId`. */
export function vmDir(sandboxesDir: string, vmId: string): string {
  return join(sandboxesDir, ...vmId.split("/"));
}
