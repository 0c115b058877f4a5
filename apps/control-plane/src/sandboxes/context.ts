import { MsbError, type ErrorCode } from "@msb/errors";
import { assertMayAccess, type Caller } from "../auth/caller.js";
import type { VmInfo } from "./backends.js";
import { KeyedMutex } from "./keyed-mutex.js";
import { invalidParams } from "./schemas.js";
import type { SandboxServiceDeps, SandboxServiceOptions } from "./service-types.js";
import type { SandboxRecord } from "./store.js";

export const VM_GONE_CODES: readonly ErrorCode[] = [
  "SANDBOX_NOT_FOUND",
  "VM_DIED",
  "SANDBOX_STOPPED",
];
const LOST_CODES: readonly ErrorCode[] = ["SANDBOX_NOT_FOUND", "VM_DIED", "AGENT_DISCONNECTED"];
export { LOST_CODES };

/**
 * What the parts of the sandbox service (lifecycle, runs, files, metrics) share: the
 * dependencies, the per-sandbox lock, and the checks every call makes.
 */
export type ServiceContext = ReturnType<typeof createServiceContext>;

export function createServiceContext(deps: SandboxServiceDeps, options: SandboxServiceOptions) {
  const { store, vmm, logger } = deps;
  const mutex = new KeyedMutex();
  const lifecycle = options.signal ?? new AbortController().signal;
  const keyOf = (namespace: string, name: string) => `${namespace}/${name}`;

  const notFound = (namespace: string, name: string) =>
    new MsbError(
      "SANDBOX_NOT_FOUND",
      `No sandbox '${name}' in namespace '${namespace}'. Start it with sandbox.start (and check the name and namespace).`,
      { details: { sandbox: name, namespace } },
    );

  const busy = (record: SandboxRecord) =>
    new MsbError(
      "SANDBOX_BUSY",
      `Sandbox '${record.name}' in namespace '${record.namespace}' is ${record.state}. Retry once that has finished.`,
      { details: { sandbox: record.name, namespace: record.namespace, state: record.state } },
    );

  /** The running sandbox, or the error that says why it cannot take a run now. */
  const requireRunning = (caller: Caller, namespace: string, name: string): SandboxRecord => {
    assertMayAccess(caller, namespace);
    const record = store.get(namespace, name);
    if (record === undefined) throw notFound(namespace, name);
    switch (record.state) {
      case "running":
        return record;
      case "starting":
      case "stopping":
        throw busy(record);
      case "stopped":
      case "failed":
        throw new MsbError(
          "SANDBOX_STOPPED",
          `Sandbox '${name}' in namespace '${namespace}' is not running — sandbox stopped: ${record.reason ?? record.state}. Start it again with sandbox.start.`,
          { details: { sandbox: name, namespace, state: record.state, reason: record.reason } },
        );
    }
  };

  const timeoutMsOf = (seconds: number | undefined): number => {
    if (seconds === undefined) return options.runDefaultMs;
    const ms = Math.ceil(seconds * 1000);
    if (ms > options.runMaxMs) {
      throw invalidParams([
        { field: "timeout", message: `must be at most ${options.runMaxMs / 1000} seconds` },
      ]);
    }
    return ms;
  };

  /**
   * A run found the VM gone: record it, unless the sandbox was stopped or restarted meanwhile
   * (`startedAt` tells runs of one boot apart).
   */
  const markLost = async (record: SandboxRecord, err: MsbError): Promise<void> => {
    await mutex.run(keyOf(record.namespace, record.name), () => {
      const now = store.get(record.namespace, record.name);
      if (now?.state === "running" && now.startedAt === record.startedAt) {
        store.apply(record.namespace, record.name, {
          type: "fail",
          reason: `the VM stopped unexpectedly: ${err.message}`,
          code: err.code,
        });
      }
      return Promise.resolve();
    });
  };

  /** Runs a streamed call; a VM found gone marks the sandbox failed before the error goes out. */
  const guardRun = async <T>(record: SandboxRecord, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof MsbError && LOST_CODES.includes(err.code)) {
        await markLost(record, err);
        if (err.code === "SANDBOX_NOT_FOUND") {
          throw new MsbError(
            "SANDBOX_STOPPED",
            `Sandbox '${record.name}' in namespace '${record.namespace}' is not running — sandbox stopped: the vmm-agent no longer runs its VM. Start it again with sandbox.start.`,
            { details: { sandbox: record.name, namespace: record.namespace }, cause: err },
          );
        }
      }
      throw err;
    }
  };

  /** The vmm-agent's view of its VMs by id; empty when it cannot say (metrics stay useful). */
  const vmsById = async (signal: AbortSignal): Promise<ReadonlyMap<string, VmInfo>> => {
    try {
      return new Map((await vmm.listVms(signal)).map((vm) => [vm.vmId, vm]));
    } catch (err) {
      logger.warn({ err }, "could not list VMs for start kinds");
      return new Map();
    }
  };

  const startFacts = (vm: VmInfo | undefined) => ({
    startKind: vm?.startKind ?? null,
    bootMs: vm?.bootMs ?? null,
  });

  const stopQuietly = async (vmId: string): Promise<void> => {
    try {
      await vmm.stopVm(vmId, lifecycle);
    } catch (err) {
      if (!(err instanceof MsbError && VM_GONE_CODES.includes(err.code))) {
        logger.warn({ err, vmId }, "could not stop the VM of a failed start");
      }
    }
  };

  return {
    ...deps,
    options,
    mutex,
    lifecycle,
    keyOf,
    notFound,
    busy,
    requireRunning,
    timeoutMsOf,
    markLost,
    guardRun,
    vmsById,
    startFacts,
    stopQuietly,
  };
}
