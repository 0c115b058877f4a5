import { MsbError } from "@msb/errors";
import type { HostInfo, HostIsolation, ImageBackend, VmmBackend } from "./sandboxes/backends.js";

export const HEALTHY_MESSAGE = "Service is healthy";

export interface ServiceHealth {
  readonly status: "up" | "down";
  /** Why it is down: the error's message. */
  readonly error?: string;
}

/** A template snapshot and its warm pool, as health reports it (snake_case like the API). */
export interface TemplateHealth {
  readonly key: string;
  readonly image: string;
  readonly memory_mib: number;
  readonly vcpus: number;
  /** "building", "ready" or "failed". */
  readonly state: string;
  readonly reason: string;
  /** Language whose REPL is warm in the snapshot, "" for none. */
  readonly warm_language: string;
  readonly pool_ready: number;
  readonly pool_target: number;
  readonly build_ms: number;
}

/** The vmm agent as health reports it when it answers. */
export interface VmmHealth extends ServiceHealth {
  readonly hypervisor?: string;
  readonly note?: string;
  readonly vms_running?: number;
  readonly max_vms?: number;
  /** Idle VMs the vmm agent paused (each resumes on its next call). */
  readonly vms_paused?: number;
  /** How VMs were started since the vmm agent started. */
  readonly starts?: {
    readonly pool_hits: number;
    readonly pool_misses: number;
    readonly template_restores: number;
    readonly cold_boots: number;
  };
  /** Template snapshots and warm pools; empty when templates are off or none exist yet. */
  readonly templates?: readonly TemplateHealth[];
  /** QEMU seccomp, QEMU's user, network policy enforcement (and why not). */
  readonly isolation?: HostIsolation;
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
      readonly vmm: VmmHealth;
    };
  };
}

/**
 * What anyone may see without a key: healthy or not, the version, the accelerator, and which
 * service is up — no error texts (KVM probe output, paths), uid ranges, VM counts or template
 * image names, which tell an outsider about the host and its tenants.
 */
export function publicHealth(body: HealthReport["body"]): HealthReport["body"] {
  return {
    message: body.message,
    version: body.version,
    accelerator: body.accelerator,
    services: {
      image: { status: body.services.image.status },
      vmm: { status: body.services.vmm.status },
    },
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
      const vmmHealth: VmmHealth =
        host.status === "fulfilled"
          ? vmmUp(host.value)
          : { status: "down", error: describe(host.reason) };
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

function vmmUp(host: HostInfo): VmmHealth {
  return {
    status: "up",
    hypervisor: host.hypervisor,
    note: host.note,
    ...(host.isolation === undefined ? {} : { isolation: host.isolation }),
    ...(host.vmsRunning === undefined ? {} : { vms_running: host.vmsRunning }),
    ...(host.maxVms === undefined ? {} : { max_vms: host.maxVms }),
    ...(host.vmsPaused === undefined ? {} : { vms_paused: host.vmsPaused }),
    ...(host.starts === undefined
      ? {}
      : {
          starts: {
            pool_hits: host.starts.poolHits,
            pool_misses: host.starts.poolMisses,
            template_restores: host.starts.templateRestores,
            cold_boots: host.starts.coldBoots,
          },
        }),
    ...(host.templates === undefined
      ? {}
      : {
          templates: host.templates.map((t) => ({
            key: t.key,
            image: t.imageReference,
            memory_mib: t.memoryMib,
            vcpus: t.vcpus,
            state: t.state,
            reason: t.reason,
            warm_language: t.warmLanguage,
            pool_ready: t.poolReady,
            pool_target: t.poolTarget,
            build_ms: t.buildMs,
          })),
        }),
  };
}
