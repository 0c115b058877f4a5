import { join } from "node:path";
import { createAgentClient } from "@msb/agent-protocol";
import type { Hypervisor } from "../hypervisor/hypervisor.js";
import { describeExit } from "../hypervisor/qemu/qemu-hypervisor.js";

export interface KvmProbeDeps {
  readonly hypervisor: Hypervisor;
  readonly kernelPath: string;
  readonly initramfsPath: string;
  /** Scratch directory of the probe VM (its sockets and console log). */
  readonly dir: string;
}

/**
 * Boots the guest kernel and agent under KVM with no disks and no network, and waits for the
 * agent's HELLO: only a guest that got that far proves KVM can run our kernel. The probe VM is
 * killed either way. Rejects with QEMU's own complaint (e.g. "KVM internal error").
 */
export async function probeKvm(deps: KvmProbeDeps, signal: AbortSignal): Promise<void> {
  const vm = await deps.hypervisor.launch({
    vmId: "accel-probe",
    dir: deps.dir,
    accelerator: "kvm",
    kernelPath: deps.kernelPath,
    initramfsPath: deps.initramfsPath,
    memoryMib: 256,
    vcpus: 1,
    volumes: [],
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
