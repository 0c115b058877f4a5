import { mkdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { createAgentClient } from "@msb/agent-protocol";
import type { Hypervisor } from "../hypervisor/hypervisor.js";
import type { ProcessCredentials } from "../hypervisor/hypervisor.js";
import type { VmIdentities } from "../identity/identity.js";
import { describeExit } from "../hypervisor/exit.js";

export interface KvmProbeDeps {
  readonly hypervisor: Hypervisor;
  readonly kernelPath: string;
  readonly initramfsPath: string;
  /** Scratch directory of the probe VM (its sockets and console log). */
  readonly dir: string;
  /**
   * The probe runs with the credentials real VMs get, so that a /dev/kvm those cannot open
   * makes the probe fail (and TCG be chosen, with the reason) instead of every later boot.
   */
  readonly identities: VmIdentities;
}

const PROBE_ID = "accel-probe";

/**
 * Boots the guest kernel and agent under KVM with no disks and no network, and waits for the
 * agent's HELLO: only a guest that got that far proves KVM can run our kernel. The probe VM is
 * killed either way. Rejects with QEMU's own complaint (e.g. "KVM internal error").
 */
export async function probeKvm(deps: KvmProbeDeps, signal: AbortSignal): Promise<void> {
  await mkdir(deps.dir, { recursive: true, mode: 0o700 });
  const identity = await deps.identities.assign(PROBE_ID, {
    network: "none",
    dir: deps.dir,
    ownFiles: [],
    volumes: [],
  });
  try {
    await probeAs(deps, identity.credentials, signal);
  } finally {
    await deps.identities.release(PROBE_ID);
  }
}

async function probeAs(
  deps: KvmProbeDeps,
  credentials: ProcessCredentials | undefined,
  signal: AbortSignal,
): Promise<void> {
  const vm = await deps.hypervisor.launch({
    vmId: PROBE_ID,
    dir: deps.dir,
    accelerator: "kvm",
    kernelPath: deps.kernelPath,
    initramfsPath: deps.initramfsPath,
    memoryMib: 256,
    vcpus: 1,
    volumes: [],
    ...(credentials === undefined ? {} : { credentials }),
  });
  try {
    const socket = await vm.connectAgent(signal);
    const client = createAgentClient(socket);
    try {
      await Promise.race([
        client.waitHello({ signal, timeoutMs: 600_000 }),
        vm.exited.then(() => {
          throw new Error("QEMU exited");
        }),
      ]);
    } finally {
      client.close();
    }
  } catch (err) {
    const complaint = vm
      .consoleTail(40)
      .filter((l) => /kvm|error|fail/i.test(l))
      .slice(0, 3)
      .join(" | ");
    // When QEMU itself gave up, its exit says more than the closed agent connection.
    const exit = await Promise.race([
      vm.exited,
      new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 500)),
    ]);
    const why =
      exit !== undefined
        ? `QEMU ${describeExit(exit)}`
        : err instanceof Error
          ? err.message
          : String(err);
    throw new Error(complaint.length > 0 ? `${why}: ${complaint}` : why, { cause: err });
  } finally {
    vm.kill("SIGKILL");
    await vm.exited;
  }
}

/** Where the probe VM lives: beside the sandboxes, so a crash mid-probe is reaped like them. */
export function probeDir(sandboxesDir: string): string {
  return join(sandboxesDir, ".accel-probe");
}

/**
 * The group that may open /dev/kvm (Debian: `kvm`, mode 0660), which unprivileged QEMUs need
 * as a supplementary group; none when the device is missing, root's group, or open to all.
 */
export async function kvmGroup(device = "/dev/kvm"): Promise<number[]> {
  const st = await stat(device).catch(() => undefined);
  if (st === undefined || st.gid === 0 || (st.mode & 0o006) === 0o006) return [];
  return (st.mode & 0o060) === 0o060 ? [st.gid] : [];
}
