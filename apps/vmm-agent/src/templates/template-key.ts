import { createHash } from "node:crypto";
import { stat } from "node:fs/promises";
import type { VmNetworkPolicy } from "../identity/identity.js";

/**
 * Bumped when what a template holds changes (warm-up cell, agent handshake): templates of
 * another format are never restored.
 */
export const TEMPLATE_FORMAT = 1;

/** Everything a snapshot depends on: a clone must match the template in all of it. */
export interface TemplateInputs {
  readonly kernelPath: string;
  readonly initramfsPath: string;
  /** `path:size:mtime:inode` of the guest kernel (see `fileIdentity`). */
  readonly kernel: string;
  /** Same for the agent initramfs (a rebuilt agent is a new template). */
  readonly initramfs: string;
  /** Same for the rootfs; its path already names the image's manifest digest. */
  readonly rootfs: string;
  readonly rootfsPath: string;
  readonly imageReference: string;
  readonly memoryMib: number;
  readonly vcpus: number;
  /**
   * The network policy. `none` has no NIC (the device set must match); `public` and `any`
   * differ only in the QEMU's primary gid, which the host firewall matches and which is set
   * when QEMU starts: a pooled clone of one must never become a sandbox of the other.
   */
  readonly network: VmNetworkPolicy;
  readonly diskQuotaBytes: number;
  /** `qemu-system-x86_64 --version`: device state is only loadable by the same QEMU. */
  readonly qemuVersion: string;
  readonly accelerator: string;
}

/** Identity of a file as far as a snapshot cares: same path, size, mtime and inode. */
export async function fileIdentity(path: string): Promise<string> {
  const st = await stat(path);
  return `${path}:${st.size}:${Math.trunc(st.mtimeMs)}:${st.ino}`;
}

/**
 * The template key: a hash of every input (the image reference is informative only — the
 * rootfs identity decides). 24 hex digits: a directory name, unique enough per host.
 */
export function templateKey(inputs: TemplateInputs): string {
  const canonical = JSON.stringify([
    TEMPLATE_FORMAT,
    inputs.kernel,
    inputs.initramfs,
    inputs.rootfs,
    inputs.memoryMib,
    inputs.vcpus,
    inputs.network,
    inputs.diskQuotaBytes,
    inputs.qemuVersion,
    inputs.accelerator,
  ]);
  return createHash("sha256").update(canonical).digest("hex").slice(0, 24);
}
