import type { ProcessTable } from "./proc.js";
import { findQemuStragglers } from "./stragglers.js";
import { recordedChildren, type LockRecord } from "./lock.js";
import { terminateAll } from "./terminate.js";

/**
 * Kills what a dead supervisor left behind: the services its lock records (when they still
 * are those processes) and QEMU processes of this `MSB_HOME`. Returns what was killed.
 */
export async function killLeftovers(
  table: ProcessTable,
  sandboxesDir: string,
  lock: LockRecord | undefined,
): Promise<string[]> {
  const services = lock === undefined ? [] : recordedChildren(lock);
  const killedServices = await terminateAll(table, services, { graceMs: 10_000 });
  const killedQemu = await terminateAll(table, findQemuStragglers(table, sandboxesDir), {
    graceMs: 5_000,
  });
  return [...killedServices, ...killedQemu];
}
