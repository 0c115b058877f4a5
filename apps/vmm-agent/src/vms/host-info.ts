import { cpus, totalmem } from "node:os";
import type { AcceleratorChoice } from "../hypervisor/hypervisor.js";
import type { HostInfo } from "./types.js";
import { availableMemoryBytes, type VmContext } from "./vm-table.js";

/** GetHostInfo: accelerator, capacity, isolation, templates and start counters. */
export async function hostInfo(ctx: VmContext): Promise<HostInfo> {
  const { deps, options, vms, starts, pool } = ctx;
  const { hypervisor, admission } = deps;
  const choice = await deps.accelerator().catch((err: unknown): AcceleratorChoice => ({
    accelerator: "tcg",
    note: `Not probed yet: ${err instanceof Error ? err.message : String(err)}`,
  }));
  return {
    accelerator: choice.accelerator,
    acceleratorNote: choice.note,
    hypervisor: hypervisor.name,
    version: `vmm-agent ${options.agentVersion}; ${await hypervisor.version()}`,
    hostCpus: cpus().length,
    hostMemoryTotalBytes: totalmem(),
    hostMemoryAvailableBytes: await availableMemoryBytes(),
    vmsRunning: [...vms.values()].filter((r) => r.state === "running").length,
    maxVms: admission.limits.maxVms,
    isolation: {
      seccomp: deps.seccomp,
      qemuUser: deps.identities.qemuUser,
      networkPolicy: deps.networkPolicy,
    },
    templates: (deps.templates?.list() ?? []).map((t) => ({
      key: t.key,
      imageReference: t.inputs.imageReference,
      memoryMib: t.inputs.memoryMib,
      vcpus: t.inputs.vcpus,
      state: t.state,
      reason: t.reason,
      warmLanguage: t.warmLanguage,
      poolReady: pool?.counts(t.key).ready ?? 0,
      poolTarget: pool?.counts(t.key).target ?? 0,
      buildMs: t.buildMs,
    })),
    starts: { ...starts },
    vmsPaused: (pool?.size() ?? 0) + [...vms.values()].filter((r) => r.idle?.paused).length,
    templateMemory: deps.templates?.memory() ?? { usedMib: 0, maxMib: 0 },
  };
}
