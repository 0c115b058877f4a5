import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { MsbError } from "@msb/errors";
import type { LaunchSpec } from "../hypervisor.js";
import type { VolumeSpec } from "./command-line.js";

/** Files a QEMU gets as inherited descriptors, and the names it opens them by. */
export interface InheritedFiles {
  /** Descriptors for spawn's stdio, from fd 3 on. */
  readonly fds: readonly number[];
  /** `/proc/self/fd/N`: QEMU's loader opens a path, and this one needs no directory rights. */
  readonly kernelPath: string;
  readonly initramfsPath: string;
  /** `/dev/fdset/N`: QEMU dups the descriptor, so it needs no right on the file at all. */
  readonly rootfsPath?: string;
  readonly fdSets: readonly { readonly fd: number; readonly set: number }[];
  /** Volumes whose `hostPath` is `/proc/self/fd/N` (a directory descriptor). */
  readonly volumes: readonly VolumeSpec[];
  /** Closes the vmm-agent's copies (after spawn, or on failure). */
  close(): Promise<void>;
}

/** The first descriptor after stdin, stdout and stderr. */
const FIRST_FD = 3;
const ROOTFS_FDSET = 1;

/**
 * Opens what the VM reads from the host so that QEMU inherits it:
 * - kernel and initramfs: QEMU opens `/proc/self/fd/N`, which skips every directory on the way
 *   but still checks the file's own mode: they are public build outputs, world-readable;
 * - the image (rootfs): an fd set; QEMU gets a read-only descriptor and no right on the file,
 *   so an image with private content need not be readable by any VM uid;
 * - volume directories: the descriptor the vmm-agent validated and granted (volumes/
 *   held-volume.ts), as `/proc/self/fd/N` for the 9p root: QEMU gets exactly that inode, and
 *   their parent directories need no grant. Those descriptors stay the caller's.
 */
export async function openInheritedFiles(spec: LaunchSpec): Promise<InheritedFiles> {
  const handles: FileHandle[] = [];
  const fds: number[] = [];
  const take = async (path: string, flags: number, what: string): Promise<string> => {
    try {
      const handle = await open(path, flags);
      handles.push(handle);
      fds.push(handle.fd);
    } catch (err) {
      throw new MsbError(
        "VM_BOOT_FAILED",
        `Could not open the ${what} ${path}: ${(err as Error).message}.`,
        { cause: err },
      );
    }
    return `/proc/self/fd/${FIRST_FD + fds.length - 1}`;
  };
  const close = async (): Promise<void> => {
    await Promise.all(handles.map((h) => h.close().catch(() => undefined)));
  };
  try {
    const kernelPath = await take(spec.kernelPath, constants.O_RDONLY, "guest kernel");
    const initramfsPath = await take(spec.initramfsPath, constants.O_RDONLY, "initramfs");
    const fdSets: { fd: number; set: number }[] = [];
    let rootfsPath: string | undefined;
    if (spec.rootfsPath !== undefined) {
      await take(spec.rootfsPath, constants.O_RDONLY, "image");
      fdSets.push({ fd: FIRST_FD + fds.length - 1, set: ROOTFS_FDSET });
      rootfsPath = `/dev/fdset/${ROOTFS_FDSET}`;
    }
    const volumes: VolumeSpec[] = [];
    for (const vol of spec.volumes) {
      fds.push(vol.fd);
      volumes.push({
        tag: vol.tag,
        readOnly: vol.readOnly,
        hostPath: `/proc/self/fd/${FIRST_FD + fds.length - 1}`,
      });
    }
    return {
      fds,
      kernelPath,
      initramfsPath,
      ...(rootfsPath === undefined ? {} : { rootfsPath }),
      fdSets,
      volumes,
      close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}
