import { randomBytes } from "node:crypto";
import { mkdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { createAgentClient } from "@msb/agent-protocol";
import { MsbError } from "@msb/errors";
import type { Accelerator } from "../hypervisor/hypervisor.js";
import { ensureScratchDisk } from "../scratch-disk.js";
import { VM_FILES } from "../supervision/vm-files.js";
import { fileIdentity, type TemplateInputs } from "../templates/template-key.js";
import { openVolumes } from "../volumes/held-volume.js";
import { tryClaim, tryRestore } from "./start-template.js";
import type { CreateVmParams } from "./types.js";
import { memoryOf, type CheckedCreate } from "./validate.js";
import {
  AGENT_CALL_TIMEOUT_MS,
  bootError,
  consoleSummary,
  watchExit,
  type VmContext,
  type VmRecord,
} from "./vm-table.js";

/**
 * Starts `rec`: a pooled clone when one is ready, else a restore from the template, else a
 * cold boot (after which the template for VMs like it is built in the background).
 */
export async function boot(
  ctx: VmContext,
  rec: VmRecord,
  params: CreateVmParams,
  checked: CheckedCreate,
  signal: AbortSignal,
): Promise<void> {
  const { deps, options, starts, pool } = ctx;
  const { hypervisor, admission, logger } = deps;
  const { kernelPath, initramfsPath } = await deps.artifacts();
  const choice = await deps.accelerator();
  rec.accelerator = choice.accelerator;
  rec.acceleratorNote = choice.note;
  const releaseBoot = await admission.acquireBoot(signal);
  try {
    await mkdir(rec.dir, { recursive: true, mode: 0o700 });
    const scratchDiskPath = join(rec.dir, VM_FILES.scratchDisk);
    const diskBytes =
      params.diskQuotaBytes > 0 ? params.diskQuotaBytes : options.defaultDiskQuotaBytes;
    const bootTimeoutMs = params.bootTimeoutMs > 0 ? params.bootTimeoutMs : options.bootTimeoutMs;
    // Templates: only VMs without volumes (the 9p devices are part of the snapshot's
    // device set) and not the restart of a sandbox whose disk is kept (its state wins).
    const diskKept =
      params.keepDisk && (await stat(scratchDiskPath).catch(() => undefined))?.isFile() === true;
    const inputs =
      deps.templates !== undefined && params.volumes.length === 0 && !diskKept
        ? await templateInputs(
            ctx,
            params,
            diskBytes,
            choice.accelerator,
            kernelPath,
            initramfsPath,
          )
        : undefined;
    const template = inputs === undefined ? undefined : deps.templates?.ready(inputs);
    if (template !== undefined && pool !== undefined) {
      const member = pool.take(template);
      if (member === undefined) starts.poolMisses++;
      else {
        starts.poolHits++;
        if (
          await tryClaim(ctx, rec, params, checked, template, member.value, bootTimeoutMs, signal)
        )
          return;
      }
    }
    if (template !== undefined) {
      const restored = await tryRestore(ctx, rec, params, checked, template, bootTimeoutMs, signal);
      if (restored) return;
    }
    await ensureScratchDisk(scratchDiskPath, diskBytes, { keep: params.keepDisk, signal });
    // Resolved, checked and held once; the grant and QEMU get this inode, not the path.
    const held = await openVolumes(checked.volumes, options.volumePolicy);
    const identity = await deps.identities.assign(rec.vmId, {
      network: params.network,
      dir: rec.dir,
      ownFiles: [scratchDiskPath],
      volumes: held,
    });
    const volumes = checked.volumes.map((v, i) => ({
      tag: v.tag,
      readOnly: v.readOnly,
      fd: held[i]!.fd,
    }));
    const deadline = AbortSignal.any([signal, AbortSignal.timeout(bootTimeoutMs)]);
    const t0 = Date.now();
    const vm = await hypervisor.launch({
      vmId: rec.vmId,
      dir: rec.dir,
      accelerator: choice.accelerator,
      kernelPath,
      initramfsPath,
      memoryMib: rec.memoryMib,
      vcpus: rec.vcpus,
      rootfsPath: params.rootfsPath,
      scratchDiskPath,
      ...(params.network === "none" ? {} : { network: { portForwards: checked.ports } }),
      volumes,
      ...(identity.credentials === undefined ? {} : { credentials: identity.credentials }),
    });
    rec.process = vm;
    rec.pid = vm.pid;
    rec.startedUnixMs = Date.now();
    watchExit(ctx, rec, vm);
    try {
      const socket = await vm.connectAgent(deadline);
      const client = createAgentClient(socket, {
        requestTimeoutMs: AGENT_CALL_TIMEOUT_MS,
        onWarning: (message) => logger.warn({ vmId: rec.vmId, message }, "guest agent"),
      });
      rec.client = client;
      const hello = await client.waitHello({ signal: deadline, timeoutMs: bootTimeoutMs });
      if (!hello.ready) {
        throw new MsbError(
          "VM_BOOT_FAILED",
          `The guest agent could not set the VM up: ${hello.bootErrors.join("; ")}.${consoleSummary(vm)}`,
          { details: { vmId: rec.vmId, bootErrors: hello.bootErrors } },
        );
      }
      const configured = await client.configure(
        {
          hostname: params.hostname !== "" ? params.hostname : rec.vmId.split("/").pop(),
          env: checked.env,
          ...(params.workdir === "" ? {} : { workdir: params.workdir }),
          mounts: checked.mounts,
          timeUnixMs: Date.now(),
          entropy: randomBytes(64),
        },
        { signal: deadline, timeoutMs: bootTimeoutMs },
      );
      if (configured.errors.length > 0) {
        throw new MsbError(
          "VM_BOOT_FAILED",
          `The guest agent could not apply the VM's settings: ${configured.errors.join("; ")}.`,
          { details: { vmId: rec.vmId, errors: configured.errors } },
        );
      }
      rec.bootMs = Date.now() - t0;
      rec.startKind = "cold";
      starts.coldBoots++;
    } catch (err) {
      throw bootError(rec, vm, err, deadline, signal, bootTimeoutMs);
    }
    // The next VM like this one restores instead of booting (built in the background).
    if (inputs !== undefined) {
      deps.templates?.ensure(inputs, rec.vmId.includes("/") ? rec.vmId.split("/")[0]! : "");
    }
  } finally {
    releaseBoot();
  }
}

export async function templateInputs(
  ctx: VmContext,
  params: CreateVmParams,
  diskBytes: number,
  accelerator: Accelerator,
  kernelPath: string,
  initramfsPath: string,
): Promise<TemplateInputs> {
  const { deps, options } = ctx;
  const { hypervisor } = deps;
  ctx.qemuVersion ??= hypervisor.version();
  const [kernel, initramfs, rootfs, version] = await Promise.all([
    fileIdentity(kernelPath),
    fileIdentity(initramfsPath),
    fileIdentity(params.rootfsPath),
    ctx.qemuVersion,
  ]);
  return {
    kernelPath,
    initramfsPath,
    kernel,
    initramfs,
    rootfs,
    rootfsPath: params.rootfsPath,
    imageReference: params.imageReference,
    memoryMib: memoryOf(ctx, params),
    vcpus: params.vcpus > 0 ? params.vcpus : options.defaultVcpus,
    network: params.network,
    diskQuotaBytes: diskBytes,
    qemuVersion: version,
    accelerator,
  };
}
