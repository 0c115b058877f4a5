import { rm, rmdir } from "node:fs/promises";
import { dirname } from "node:path";
import { MsbError } from "@msb/errors";
import type { Reservation } from "../admission.js";
import { createIdleTracker } from "../idle-pause.js";
import { createPool } from "../templates/pool.js";
import { isValidVmId, vmDir } from "../supervision/vm-files.js";
import * as guestCalls from "./guest-calls.js";
import { hostInfo } from "./host-info.js";
import { boot } from "./start-cold.js";
import { destroyPooled, spawnPooled } from "./start-template.js";
import { stop } from "./stop.js";
import type { StartCounters, VmService, VmServiceDeps, VmServiceOptions } from "./types.js";
import { validateCreate } from "./validate.js";
import {
  find,
  info,
  invalid,
  notRunning,
  release,
  type PooledVm,
  type VmContext,
  type VmRecord,
} from "./vm-table.js";

/**
 * The vmm-agent's behaviour, transport-free (the gRPC adapter only maps to and from it): the
 * VM table and lifecycle here; start paths in start-cold.ts and start-template.ts, stop in
 * stop.ts, guest calls in guest-calls.ts, host info in host-info.ts. Every call that reaches
 * a guest first wakes an idle-paused VM.
 */
export function createVmService(deps: VmServiceDeps, options: VmServiceOptions): VmService {
  const { logger, admission } = deps;
  const starts: StartCounters = { poolHits: 0, poolMisses: 0, templateRestores: 0, coldBoots: 0 };
  const ctx: VmContext = {
    deps,
    options,
    vms: new Map<string, VmRecord>(),
    starts,
    pool: undefined,
    qemuVersion: undefined,
  };
  const { vms } = ctx;
  if (deps.templates !== undefined && options.poolSize > 0) {
    const pool = createPool<PooledVm>(
      {
        spawn: (template, id, signal) => spawnPooled(ctx, template, id, signal),
        destroy: (p) => destroyPooled(ctx, p),
        died: (p) => p.clone.vm.exited,
        logger,
      },
      { target: options.poolSize },
    );
    ctx.pool = pool;
    deps.templates.onReady((t) => pool.fill(t));
    deps.templates.onEvicted((key) => void pool.drop(key));
  }
  const { pool } = ctx;

  const service: VmService = {
    hostInfo: () => hostInfo(ctx),

    async createVm(params, signal) {
      const existing = vms.get(params.vmId);
      if (existing !== undefined && existing.state !== "stopped" && existing.state !== "failed") {
        throw new MsbError(
          "SANDBOX_EXISTS",
          `VM '${params.vmId}' already exists and is ${existing.state}. Stop it first or pick another id.`,
          { details: { vmId: params.vmId, state: existing.state } },
        );
      }
      const checked = await validateCreate(ctx, params);
      if (params.network === "public" && !deps.networkPolicy.enforced) {
        logger.warn(
          { vmId: params.vmId, reason: deps.networkPolicy.note },
          "network 'public' is not enforced on this host: the VM can reach host and private addresses",
        );
      }
      const memoryMib = params.memoryMib > 0 ? params.memoryMib : options.defaultMemoryMib;
      const vcpus = params.vcpus > 0 ? params.vcpus : options.defaultVcpus;
      if (memoryMib < 64) throw invalid("memory_mib must be at least 64.");
      if (vcpus > 255) throw invalid("vcpus must be at most 255.");
      // Pooled VMs hold capacity only until a real create needs it.
      let reservation: Reservation | undefined;
      while (reservation === undefined) {
        try {
          reservation = admission.reserve(memoryMib);
        } catch (err) {
          // Pooled clones first, then template RAM: both only hold memory until a VM needs it.
          if (!(await pool?.evictOne()) && !deps.templates?.evictOne()) throw err;
        }
      }
      if (vms.get(params.vmId) !== existing) {
        reservation.release();
        throw new MsbError("SANDBOX_EXISTS", `VM '${params.vmId}' is being created already.`);
      }
      const rec: VmRecord = {
        vmId: params.vmId,
        dir: vmDir(options.sandboxesDir, params.vmId),
        state: "starting",
        reason: "",
        accelerator: "",
        acceleratorNote: "",
        pid: 0,
        startedUnixMs: 0,
        bootMs: 0,
        startKind: "cold",
        memoryMib,
        vcpus,
        imageReference: params.imageReference,
        workdir: params.workdir,
        reservation,
        boot: new AbortController(),
        repls: new Map(),
        execs: new Map(),
      };
      vms.set(params.vmId, rec);
      const bootSignal = AbortSignal.any([signal, rec.boot.signal]);
      rec.booting = boot(ctx, rec, params, checked, bootSignal);
      try {
        await rec.booting;
      } catch (err) {
        const vm = rec.process;
        if (vm !== undefined) {
          vm.kill("SIGKILL");
          await vm.exited;
        }
        release(rec);
        await deps.identities.release(rec.vmId);
        if (rec.state === "starting") {
          rec.state = "failed";
          rec.reason = err instanceof Error ? err.message : String(err);
        }
        logger.warn({ vmId: rec.vmId, err }, "vm failed to boot");
        throw err;
      }
      if (rec.state !== "starting") throw notRunning(rec);
      rec.state = "running";
      if (options.idlePauseMs > 0 && params.ports.length === 0 && rec.process !== undefined) {
        rec.idle = createIdleTracker(rec.process, {
          idleMs: options.idlePauseMs,
          logger,
          vmId: rec.vmId,
        });
        rec.idle.arm();
      }
      logger.info(
        { vmId: rec.vmId, pid: rec.pid, bootMs: rec.bootMs, accelerator: rec.accelerator },
        "vm running",
      );
      return info(rec);
    },

    async stopVm(vmId, { timeoutMs, removeDisk }) {
      if (removeDisk && !vms.has(vmId) && isValidVmId(vmId)) {
        // A VM this process does not track (stopped before a restart): only its directory is
        // left, and deleting it is what the caller asked for. Not an error when it is gone too.
        const dir = vmDir(options.sandboxesDir, vmId);
        await rm(dir, { recursive: true, force: true });
        if (vmId.includes("/")) await rmdir(dirname(dir)).catch(() => undefined);
        logger.info({ vmId }, "disk of an untracked vm removed");
        return {
          vmId,
          state: "stopped",
          reason: "",
          accelerator: "",
          acceleratorNote: "",
          pid: 0,
          startedUnixMs: 0,
          memoryMib: 0,
          vcpus: 0,
          imageReference: "",
          bootMs: 0,
          startKind: "cold",
          paused: false,
        };
      }
      const rec = find(ctx, vmId);
      if (rec.stopping === undefined) {
        rec.stopping = stop(
          ctx,
          rec,
          timeoutMs > 0 ? timeoutMs : options.stopTimeoutMs,
          removeDisk,
        );
      }
      try {
        return await rec.stopping;
      } finally {
        rec.stopping = undefined;
        if (removeDisk && vms.get(vmId) === rec) vms.delete(vmId);
      }
    },

    listVms() {
      return [...vms.values()].map(info);
    },

    metrics: (vmId, signal) => guestCalls.metrics(ctx, vmId, signal),
    exec: (params, signal) => guestCalls.exec(ctx, params, signal),
    runCode: (params, signal) => guestCalls.runCode(ctx, params, signal),
    guest: (vmId) => guestCalls.guest(ctx, vmId),
    signalProcess: (vmId, execId, sig) => guestCalls.signalProcess(ctx, vmId, execId, sig),
    readFile: (vmId, path, maxBytes, signal) =>
      guestCalls.readFile(ctx, vmId, path, maxBytes, signal),
    writeFile: (vmId, path, data, opts, signal) =>
      guestCalls.writeFile(ctx, vmId, path, data, opts, signal),

    async stopAll(signal) {
      const live = [...vms.values()].filter((r) => r.state !== "stopped");
      const budget = Math.max(500, Math.min(options.stopTimeoutMs, 3_000));
      await Promise.race([
        Promise.all([
          // Pooled VMs go down, template builds are aborted, template files deleted.
          (async () => {
            await pool?.close();
            await deps.templates?.close();
          })().catch((err: unknown) => {
            logger.error({ err }, "closing the pool and templates failed");
          }),
          ...live.map((rec) =>
            service
              .stopVm(rec.vmId, { timeoutMs: budget, removeDisk: false })
              .catch((err: unknown) => {
                logger.error({ vmId: rec.vmId, err }, "stop failed");
              }),
          ),
        ]),
        new Promise<void>((resolve) => signal.addEventListener("abort", () => resolve())),
      ]);
      // Whatever is still alive (deadline passed) is killed outright: no QEMU outlives us.
      for (const rec of vms.values()) rec.process?.kill("SIGKILL");
    },
  };

  /** Runs a call with the VM awake: resumed first if idle-paused, the idle timer held. */
  async function awake<T>(vmId: string, call: () => Promise<T>): Promise<T> {
    const idle = vms.get(vmId)?.idle;
    if (idle === undefined) return call();
    const end = await idle.begin();
    try {
      return await call();
    } finally {
      end();
    }
  }

  async function* awakeStream<T>(vmId: string, call: () => AsyncIterable<T>): AsyncIterable<T> {
    const idle = vms.get(vmId)?.idle;
    const end = idle === undefined ? undefined : await idle.begin();
    try {
      yield* call();
    } finally {
      end?.();
    }
  }

  return {
    ...service,
    metrics: (vmId, signal) => awake(vmId, () => service.metrics(vmId, signal)),
    exec: (params, signal) => awakeStream(params.vmId, () => service.exec(params, signal)),
    runCode: (params, signal) => awakeStream(params.vmId, () => service.runCode(params, signal)),
    signalProcess: (vmId, execId, sig) =>
      awake(vmId, () => service.signalProcess(vmId, execId, sig)),
    readFile: (vmId, path, maxBytes, signal) =>
      awake(vmId, () => service.readFile(vmId, path, maxBytes, signal)),
    writeFile: (vmId, path, data, opts, signal) =>
      awake(vmId, () => service.writeFile(vmId, path, data, opts, signal)),
  };
}
