import { MsbError } from "@msb/errors";
import { assertMayAccess, mayAccess } from "../auth/caller.js";
import type { VmInfo } from "./backends.js";
import { LOST_CODES, type ServiceContext } from "./context.js";
import type { SandboxMetricsEntry, SandboxService } from "./service-types.js";
import type { SandboxRecord } from "./store.js";

/** `sandbox.metrics.get`: the stored state with the vmm-agent's usage of running VMs. */
export function createMetrics(ctx: ServiceContext): Pick<SandboxService, "metrics"> {
  const { store, vmm, logger, notFound, markLost, vmsById, startFacts } = ctx;
  return {
    async metrics(caller, params, signal) {
      let records: SandboxRecord[];
      if (params.namespace === "*") {
        records = store.list().filter((r) => mayAccess(caller, r.namespace));
      } else {
        assertMayAccess(caller, params.namespace);
        records = store.list(params.namespace);
      }
      if (params.sandbox !== undefined) {
        records = records.filter((r) => r.name === params.sandbox);
        if (records.length === 0) {
          throw notFound(params.namespace === "*" ? "*" : params.namespace, params.sandbox);
        }
      }
      const vms = records.some((r) => r.state === "running")
        ? await vmsById(signal)
        : new Map<string, VmInfo>();
      const sandboxes = await Promise.all(
        records.map(async (r): Promise<SandboxMetricsEntry> => {
          const base = {
            namespace: r.namespace,
            name: r.name,
            state: r.state,
            reason: r.reason,
            image: r.config.image,
            start_kind: null,
            boot_ms: null,
            paused: false,
          };
          const idle = { ...base, running: false, cpu_usage: 0, memory_usage: 0, disk_usage: 0 };
          if (r.state !== "running") return idle;
          const vm = vms.get(r.vmId);
          const facts = startFacts(vm);
          try {
            const usage = await vmm.vmUsage(r.vmId, signal);
            return {
              ...base,
              start_kind: facts.startKind,
              boot_ms: facts.bootMs,
              paused: vm?.paused ?? false,
              running: usage.running,
              cpu_usage: Math.round(usage.cpuPercent * 100) / 100,
              memory_usage: Math.round(usage.memoryUsedBytes / (1024 * 1024)),
              disk_usage: usage.diskUsedBytes,
            };
          } catch (err) {
            if (err instanceof MsbError && LOST_CODES.includes(err.code)) {
              await markLost(r, err);
              const now = store.get(r.namespace, r.name);
              return { ...idle, state: now?.state ?? r.state, reason: now?.reason ?? null };
            }
            if (err instanceof MsbError && err.code === "SERVICE_UNAVAILABLE") throw err;
            logger.warn({ err, vmId: r.vmId }, "could not read VM metrics");
            return { ...idle, running: true };
          }
        }),
      );
      return { sandboxes };
    },
  };
}
