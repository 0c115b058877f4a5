import { constants } from "node:fs";
import { open, readlink, realpath, stat, type FileHandle } from "node:fs/promises";
import { MsbError } from "@msb/errors";
import { volumeAllowed, type VolumePolicy } from "./volume-policy.js";

/**
 * A volume directory resolved and validated once and then held open: every later step (the
 * ACL grant, QEMU's 9p root, taking the grant back) acts on this inode through
 * `/proc/<vmm-agent pid>/fd/N`, never on the path again. A path swapped for a symlink after
 * the check changes nothing.
 */
export interface HeldVolume {
  /** The descriptor (O_RDONLY | O_DIRECTORY | O_NOFOLLOW) QEMU inherits. */
  readonly fd: number;
  /** Where the held directory was when it was checked (the kernel's name for the fd). */
  readonly realPath: string;
  /** `/proc/<pid>/fd/<fd>`: names the held inode for tools that take a path (setfacl). */
  readonly procPath: string;
  readonly dev: number;
  readonly ino: number;
  readonly owner: { readonly uid: number; readonly gid: number };
  readonly readOnly: boolean;
  /**
   * Throws unless `procPath` still names the inode that was checked (dev and inode compared),
   * right before a grant is made through it.
   */
  verify(): Promise<void>;
  close(): Promise<void>;
}

function denied(hostPath: string, what: string, policy: VolumePolicy): MsbError {
  const allowed =
    policy.roots.length === 0
      ? "this server allows no volume mounts (the operator can set MSB_VOLUME_ROOTS)"
      : `allowed roots: ${policy.roots.join(", ")}, never MSB_HOME, MSB_CACHE_DIR or a directory containing them`;
  return new MsbError("POLICY_DENIED", `Volume ${hostPath} ${what} is not allowed: ${allowed}.`, {
    details: { hostPath, volumeRoots: policy.roots },
  });
}

/** Resolves `hostPath` and checks it against `policy` without opening it (early refusal). */
export async function checkVolumePath(hostPath: string, policy: VolumePolicy): Promise<string> {
  const real = await realpath(hostPath).catch((err: NodeJS.ErrnoException) => {
    throw new MsbError(
      "INVALID_PARAMS",
      `Volume host_path ${hostPath} is not an existing directory (${err.code ?? err.message}).`,
      { details: { hostPath } },
    );
  });
  if (!volumeAllowed(real, policy)) {
    throw denied(hostPath, real === hostPath ? "" : `(which resolves to ${real})`, policy);
  }
  return real;
}

/**
 * Resolves `hostPath` (realpath), opens the result with O_DIRECTORY | O_NOFOLLOW, and checks
 * the policy again on the path the kernel gives for the open descriptor: a component swapped
 * for a symlink between realpath and open shows there. POLICY_DENIED when outside the roots.
 */
export async function openVolume(
  hostPath: string,
  readOnly: boolean,
  policy: VolumePolicy,
): Promise<HeldVolume> {
  const real = await checkVolumePath(hostPath, policy);
  let handle: FileHandle;
  try {
    handle = await open(real, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
  } catch (err) {
    throw new MsbError(
      "INVALID_PARAMS",
      `Volume host_path ${hostPath} is not an existing directory (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}).`,
      { details: { hostPath }, cause: err },
    );
  }
  try {
    const procPath = `/proc/${process.pid}/fd/${handle.fd}`;
    const held = await readlink(procPath);
    if (held !== real || !volumeAllowed(held, policy)) {
      throw denied(hostPath, `(which was replaced by ${held} while it was opened)`, policy);
    }
    const st = await handle.stat();
    if (!st.isDirectory()) {
      throw new MsbError("INVALID_PARAMS", `Volume host_path ${hostPath} is not a directory.`);
    }
    return {
      fd: handle.fd,
      realPath: held,
      procPath,
      dev: st.dev,
      ino: st.ino,
      owner: { uid: st.uid, gid: st.gid },
      readOnly,
      async verify() {
        const [mine, named] = await Promise.all([handle.stat(), stat(procPath)]);
        if (
          mine.dev !== st.dev ||
          mine.ino !== st.ino ||
          named.dev !== st.dev ||
          named.ino !== st.ino
        ) {
          throw new MsbError(
            "VM_BOOT_FAILED",
            `Volume ${held} changed between its check and its grant; nothing was granted.`,
          );
        }
      },
      close: () => handle.close().catch(() => undefined),
    };
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/** Opens every volume of a VM; on a failure the ones already open are closed. */
export async function openVolumes(
  volumes: readonly { readonly hostPath: string; readonly readOnly: boolean }[],
  policy: VolumePolicy,
): Promise<HeldVolume[]> {
  const held: HeldVolume[] = [];
  try {
    for (const v of volumes) held.push(await openVolume(v.hostPath, v.readOnly, policy));
    return held;
  } catch (err) {
    await Promise.all(held.map((h) => h.close()));
    throw err;
  }
}
