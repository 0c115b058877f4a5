import { mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { MsbError } from "@msb/errors";
import type { VmProcess } from "../hypervisor/hypervisor.js";
import { VM_FILES } from "../supervision/vm-files.js";
import { launchClone, personalize, prewarm } from "../templates/restore.js";
import { poolVmDir, type Template } from "../templates/templates.js";
import type { CreateVmParams } from "./types.js";
import { identityOf, type CheckedCreate } from "./validate.js";
import {
  bootError,
  consoleSummary,
  forceDown,
  watchExit,
  type PooledVm,
  type VmContext,
  type VmRecord,
} from "./vm-table.js";

// Starts from a template snapshot: pooled clones (spawned, claimed) and restores.

/** Restores a clone into the template's pool directory and pauses it. */
export async function spawnPooled(
  ctx: VmContext,
  template: Template,
  id: string,
  signal: AbortSignal,
): Promise<PooledVm> {
  const { deps, options } = ctx;
  const { hypervisor, admission, logger } = deps;
  const reservation = admission.reserve(template.inputs.memoryMib);
  let releaseBoot: (() => void) | undefined;
  let vm: VmProcess | undefined;
  const dir = poolVmDir(template.paths, id);
  // `:` never occurs in a sandbox's vm id, so this identity cannot clash with one.
  const vmId = `pool:${template.key}/${id}`;
  try {
    releaseBoot = await admission.acquireBoot(signal);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const deadline = AbortSignal.any([signal, AbortSignal.timeout(options.bootTimeoutMs)]);
    const clone = await launchClone(
      { hypervisor, identities: deps.identities, logger },
      {
        vmId,
        dir,
        template,
        accelerator: template.inputs.accelerator === "kvm" ? "kvm" : "tcg",
        scratchDiskPath: join(dir, VM_FILES.scratchDisk),
        portForwards: [],
        timeoutMs: options.bootTimeoutMs,
      },
      (launched) => (vm = launched),
      deadline,
    );
    await prewarm(clone, template, options.outputCapBytes, deadline, options.bootTimeoutMs);
    await clone.vm.pause(deadline);
    return { clone, vmId, dir, reservation };
  } catch (err) {
    if (vm !== undefined) await forceDown(vm);
    await deps.identities.release(vmId);
    reservation.release();
    await rm(dir, { recursive: true, force: true });
    throw err;
  } finally {
    releaseBoot?.();
  }
}

export async function destroyPooled(ctx: VmContext, p: PooledVm): Promise<void> {
  const { deps } = ctx;
  p.clone.client.close();
  await forceDown(p.clone.vm);
  await deps.identities.release(p.vmId);
  p.reservation.release();
  await rm(p.dir, { recursive: true, force: true });
}

/**
 * Makes a pooled clone `rec`'s VM: its directory becomes the sandbox's, it runs again, gets
 * the port forwards and its identity. False (the clone destroyed) when that failed for a
 * reason of the clone's; the caller then restores or boots.
 */
export async function tryClaim(
  ctx: VmContext,
  rec: VmRecord,
  params: CreateVmParams,
  checked: CheckedCreate,
  template: Template,
  pooled: PooledVm,
  bootTimeoutMs: number,
  signal: AbortSignal,
): Promise<boolean> {
  const { deps } = ctx;
  const { logger } = deps;
  const deadline = AbortSignal.any([signal, AbortSignal.timeout(bootTimeoutMs)]);
  const t0 = Date.now();
  const { clone } = pooled;
  // The create holds its own reservation; the pool's goes.
  pooled.reservation.release();
  try {
    await rm(rec.dir, { recursive: true, force: true });
    // The QEMU keeps its uid and primary gid (the template key holds the network policy);
    // the sandbox's id now owns them, so that stopping it releases them.
    await deps.identities.rename(pooled.vmId, rec.vmId);
    await rename(pooled.dir, rec.dir);
    clone.vm.relocate(rec.dir);
    rec.process = clone.vm;
    rec.pid = clone.vm.pid;
    rec.startedUnixMs = Date.now();
    watchExit(ctx, rec, clone.vm);
    rec.client = clone.client;
    await clone.vm.resume(deadline);
    for (const fwd of checked.ports) await clone.vm.addPortForward(fwd, deadline);
    const restored = await personalize(
      clone,
      template,
      identityOf(ctx, rec, params, checked, bootTimeoutMs),
      deadline,
    );
    if (restored.python !== undefined) rec.repls.set("python", restored.python);
    rec.bootMs = Date.now() - t0;
    rec.startKind = "pool";
    return true;
  } catch (err) {
    if (signal.aborted || rec.state !== "starting") {
      throw bootError(rec, clone.vm, err, deadline, signal, bootTimeoutMs);
    }
    logger.warn({ vmId: rec.vmId, template: template.key, err }, "pool claim failed; restore");
    rec.process = undefined;
    rec.client = undefined;
    rec.repls.clear();
    clone.client.close();
    await forceDown(clone.vm);
    await deps.identities.release(pooled.vmId);
    await deps.identities.release(rec.vmId);
    await rm(pooled.dir, { recursive: true, force: true });
    await rm(rec.dir, { recursive: true, force: true });
    await mkdir(rec.dir, { recursive: true, mode: 0o700 });
    return false;
  }
}

/**
 * Restores `rec` from `template`. False (and the VM's traces gone) when the restore failed
 * for a reason of the template's: the template is discarded and the caller cold-boots.
 */
export async function tryRestore(
  ctx: VmContext,
  rec: VmRecord,
  params: CreateVmParams,
  checked: CheckedCreate,
  template: Template,
  bootTimeoutMs: number,
  signal: AbortSignal,
): Promise<boolean> {
  const { deps, starts } = ctx;
  const { hypervisor, logger } = deps;
  const deadline = AbortSignal.any([signal, AbortSignal.timeout(bootTimeoutMs)]);
  const t0 = Date.now();
  let vm: VmProcess | undefined;
  try {
    const clone = await launchClone(
      { hypervisor, identities: deps.identities, logger },
      {
        vmId: rec.vmId,
        dir: rec.dir,
        template,
        accelerator: template.inputs.accelerator === "kvm" ? "kvm" : "tcg",
        scratchDiskPath: join(rec.dir, VM_FILES.scratchDisk),
        portForwards: checked.ports,
        timeoutMs: bootTimeoutMs,
      },
      (launched) => {
        vm = launched;
        rec.process = launched;
        rec.pid = launched.pid;
        rec.startedUnixMs = Date.now();
        watchExit(ctx, rec, launched);
      },
      deadline,
    );
    rec.client = clone.client;
    const restored = await personalize(
      clone,
      template,
      identityOf(ctx, rec, params, checked, bootTimeoutMs),
      deadline,
    );
    rec.client = restored.client;
    if (restored.python !== undefined) rec.repls.set("python", restored.python);
    rec.bootMs = Date.now() - t0;
    rec.startKind = "template";
    starts.templateRestores++;
    return true;
  } catch (err) {
    // Out of VM uids is not the template's fault: a cold boot would fail the same way.
    const capacity = err instanceof MsbError && err.code === "CAPACITY_EXHAUSTED";
    if (signal.aborted || rec.state !== "starting" || capacity) {
      throw vm === undefined ? err : bootError(rec, vm, err, deadline, signal, bootTimeoutMs);
    }
    const reason = `restore failed: ${err instanceof Error ? err.message : String(err)}${consoleSummary(vm, 5)}`;
    logger.warn({ vmId: rec.vmId, template: template.key, err }, "restore failed; cold boot");
    deps.templates?.discard(template.key, reason);
    rec.process = undefined;
    rec.client?.close();
    rec.client = undefined;
    rec.repls.clear();
    if (vm !== undefined) {
      vm.kill("SIGKILL");
      await vm.exited;
    }
    await deps.identities.release(rec.vmId);
    await rm(join(rec.dir, VM_FILES.scratchDisk), { force: true });
    return false;
  }
}
