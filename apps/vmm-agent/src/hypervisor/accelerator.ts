import { constants } from "node:fs";
import { access } from "node:fs/promises";
import type { AccelMode } from "../config.js";
import type { AcceleratorChoice } from "./hypervisor.js";

export interface ChooseAcceleratorOptions {
  readonly mode: AccelMode;
  /** Default /dev/kvm. */
  readonly kvmDevice?: string;
  /**
   * Boots a guest under KVM to its agent's HELLO; rejects with the reason when it cannot.
   * Called at most once, with a signal that aborts at the probe deadline.
   */
  readonly probeKvm: (signal: AbortSignal) => Promise<void>;
  readonly probeTimeoutMs: number;
}

/**
 * Picks the accelerator for this process. Having /dev/kvm is not enough: on nested or
 * paravirtual KVM (kvm_pvm) the guest kernel dies early with "KVM internal error … emulation
 * failure", so `auto` boots a real guest under KVM once and falls back to TCG when that fails.
 */
export async function chooseAccelerator(
  options: ChooseAcceleratorOptions,
): Promise<AcceleratorChoice> {
  if (options.mode === "tcg") {
    return { accelerator: "tcg", note: "TCG forced by MSB_ACCEL=tcg." };
  }
  if (options.mode === "kvm") return { accelerator: "kvm", note: "" };
  const device = options.kvmDevice ?? "/dev/kvm";
  try {
    await access(device, constants.R_OK | constants.W_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? "error";
    return {
      accelerator: "tcg",
      note: `${device} is not usable (${code}); VMs run under TCG emulation, which is several times slower.`,
    };
  }
  const signal = AbortSignal.timeout(options.probeTimeoutMs);
  try {
    await options.probeKvm(signal);
    return { accelerator: "kvm", note: "" };
  } catch (err) {
    const why = signal.aborted
      ? `the probe guest was not ready within ${options.probeTimeoutMs} ms`
      : err instanceof Error
        ? err.message
        : String(err);
    return {
      accelerator: "tcg",
      note: `KVM boot probe failed (${why}); VMs run under TCG emulation, which is several times slower.`,
    };
  }
}
