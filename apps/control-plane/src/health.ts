import { MsbError } from "@msb/errors";
import type { HostIsolation, ImageBackend, VmmBackend } from "./sandboxes/backends.js";

export const HEALTHY_MESSAGE = "Service is healthy";

export interface ServiceHealth {
  readonly status: "up" | "down";
  /** Why it is down: the error's message. */
  readonly error?: string;
}

export interface HealthReport {
  readonly healthy: boolean;
  readonly body: {
    /** Exactly "Service is healthy" when healthy (the original's clients check it). */
    readonly message: string;
    readonly version: string;
    /** "kvm", "tcg", "hvf", or "unknown" while the vmm-agent is down. */
    readonly accelerator: string;
    readonly services: {
      readonly image: ServiceHealth;
      readonly vmm: ServiceHealth & {
        readonly hypervisor?: string;
        readonly note?: string;
        /** QEMU seccomp, QEMU's user, network policy enforcement (and why not). */
        readonly isolation?: HostIsolation;
      };
    };
  };
}

export interface HealthProbe {
  check(signal: AbortSignal): Promise<HealthReport>;
}

/**
 * Asks both backend services whether they answer. Healthy: the SPEC's message. Degraded: a
 * different message naming what is down (the HTTP route answers 503 then).
 */
export function createHealthProbe(
  deps: { readonly image: ImageBackend; readonly vmm: VmmBackend },
  options: { readonly version: string },
): HealthProbe {
  const describe = (err: unknown) =>
    err instanceof MsbError ? err.message : "unexpected failure (see the server log)";
  return {
    async check(signal) {
      const [image, host] = await Promise.allSettled([
        deps.image.ping(signal),
        deps.vmm.hostInfo(signal),
      ]);
      const imageHealth: ServiceHealth =
        image.status === "fulfilled"
          ? { status: "up" }
          : { status: "down", error: describe(image.reason) };
      const vmmHealth =
        host.status === "fulfilled"
          ? {
              status: "up" as const,
              hypervisor: host.value.hypervisor,
              note: host.value.note,
              ...(host.value.isolation === undefined ? {} : { isolation: host.value.isolation }),
            }
          : { status: "down" as const, error: describe(host.reason) };
      const down = [
        ...(imageHealth.status === "down" ? ["the image service"] : []),
        ...(vmmHealth.status === "down" ? ["the vmm agent"] : []),
      ];
      const healthy = down.length === 0;
      return {
        healthy,
        body: {
          message: healthy
            ? HEALTHY_MESSAGE
            : `Service is degraded: ${down.join(" and ")} ${down.length > 1 ? "are" : "is"} not reachable. 'msb server status' and 'msb server log' show why.`,
          version: options.version,
          accelerator: host.status === "fulfilled" ? host.value.accelerator : "unknown",
          services: { image: imageHealth, vmm: vmmHealth },
        },
      };
    },
  };
}
