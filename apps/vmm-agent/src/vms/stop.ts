import { rm, rmdir } from "node:fs/promises";
import { dirname } from "node:path";
import { MsbError } from "@msb/errors";
import type { VmInfo } from "./types.js";
import {
  forceDown,
  info,
  release,
  settledWithin,
  type VmContext,
  type VmRecord,
} from "./vm-table.js";

/** Stops a VM: the guest powers off (or QEMU is forced down), its grants and uid go. */
export async function stop(
  ctx: VmContext,
  rec: VmRecord,
  timeoutMs: number,
  removeDisk: boolean,
): Promise<VmInfo> {
  const { deps } = ctx;
  const { logger } = deps;
  // A paused guest cannot shut down cleanly: wake it, and keep it awake.
  const idle = rec.idle;
  if (idle !== undefined) {
    await idle.begin().catch(() => undefined);
    idle.dispose();
  }
  const wasFailed = rec.state === "failed";
  if (rec.state === "starting") {
    rec.state = "stopping";
    rec.boot.abort(new MsbError("CANCELLED", `VM '${rec.vmId}' was stopped while starting.`));
    await rec.booting?.catch(() => undefined);
  }
  if (!wasFailed) rec.state = "stopping";
  const vm = rec.process;
  if (vm !== undefined) {
    const client = rec.client;
    if (client !== undefined) {
      // The guest syncs its disks and powers off; QEMU (-no-reboot) then exits by itself.
      await client.shutdown({ timeoutMs }).catch(() => undefined);
      await settledWithin(vm.exited, timeoutMs);
    }
    await forceDown(vm);
  }
  release(rec);
  await deps.identities.release(rec.vmId);
  if (removeDisk) {
    await rm(rec.dir, { recursive: true, force: true });
    // Drop the namespace directory too once its last VM is gone.
    if (rec.vmId.includes("/")) await rmdir(dirname(rec.dir)).catch(() => undefined);
  }
  rec.state = wasFailed ? "failed" : "stopped";
  if (!wasFailed) rec.reason = "";
  logger.info({ vmId: rec.vmId, removeDisk }, "vm stopped");
  return info(rec);
}
