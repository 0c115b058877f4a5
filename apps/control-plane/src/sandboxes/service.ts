import { createServiceContext } from "./context.js";
import { createFiles } from "./files.js";
import { createLifecycle } from "./lifecycle.js";
import { createMetrics } from "./metrics.js";
import { createRuns } from "./runs.js";
import type { SandboxService, SandboxServiceDeps, SandboxServiceOptions } from "./service-types.js";

export type {
  FileReadResult,
  FileWriteResult,
  MetricsResult,
  ReconcileOptions,
  ReconcileReport,
  RunCodeResult,
  RunCommandResult,
  RunObserver,
  SandboxMetricsEntry,
  SandboxService,
  SandboxServiceDeps,
  SandboxServiceOptions,
  StartResult,
  StopResult,
} from "./service-types.js";

/**
 * The one place that decides about sandboxes (JSON-RPC and MCP are thin adapters over it),
 * composed of its parts: lifecycle (start, stop, reconcile), runs, files and attach, metrics.
 * Every method checks the caller's namespace, so adapters never do.
 */
export function createSandboxService(
  deps: SandboxServiceDeps,
  options: SandboxServiceOptions,
): SandboxService {
  const ctx = createServiceContext(deps, options);
  return {
    ...createLifecycle(ctx),
    ...createRuns(ctx),
    ...createFiles(ctx),
    ...createMetrics(ctx),
  };
}
