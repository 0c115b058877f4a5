import { readFile } from "node:fs/promises";
import { freemem } from "node:os";
import type { AgentClient, ProcessHandle, ReplLanguage, ReplSession } from "@msb/agent-protocol";
import { MsbError } from "@msb/errors";
import type { Reservation } from "../admission.js";
import { describeExit } from "../hypervisor/exit.js";
import type { Accelerator, VmProcess } from "../hypervisor/hypervisor.js";
import type { IdleTracker } from "../idle-pause.js";
import { kernelPanicLine } from "../supervision/console-log.js";
import type { Pool } from "../templates/pool.js";
import type { Clone } from "../templates/restore.js";
import type {
  StartCounters,
  StartKind,
  VmInfo,
  VmServiceDeps,
  VmServiceOptions,
  VmStateName,
} from "./types.js";

/** What the VM service's parts share: its dependencies, settings, the VM table and counters. */
export interface VmContext {
  readonly deps: VmServiceDeps;
  readonly options: VmServiceOptions;
  readonly vms: Map<string, VmRecord>;
  readonly starts: StartCounters;
  /** Paused, restored clones per template; undefined without templates or with pool size 0. */
  pool: Pool<PooledVm> | undefined;
  /** The VMM's version, asked once (it is part of every template key). */
  qemuVersion: Promise<string> | undefined;
}

/** Default cap of ReadFile when the caller gives none (proto: 16 MiB). */
export const DEFAULT_READ_CAP_BYTES = 16 * 1024 * 1024;
/** Agent requests that are not user work (configure, metrics, files) get this long. */
export const AGENT_CALL_TIMEOUT_MS = 30_000;
/** Extra time an exec may take past its own timeout before the host gives up on the agent. */
export const EXEC_WATCHDOG_GRACE_MS = 15_000;
export const REPL_LANGUAGES: readonly ReplLanguage[] = ["python", "node"];

/** One VM of this vmm-agent, as the table keeps it. */
export interface VmRecord {
  readonly vmId: string;
  readonly dir: string;
  state: VmStateName;
  reason: string;
  accelerator: Accelerator | "";
  acceleratorNote: string;
  pid: number;
  startedUnixMs: number;
  bootMs: number;
  startKind: StartKind;
  readonly memoryMib: number;
  readonly vcpus: number;
  readonly imageReference: string;
  readonly workdir: string;
  process?: VmProcess;
  client?: AgentClient;
  reservation?: Reservation;
  readonly boot: AbortController;
  booting?: Promise<unknown>;
  stopping?: Promise<VmInfo>;
  readonly repls: Map<ReplLanguage, ReplSession>;
  readonly execs: Map<string, ProcessHandle>;
  /** Idle pause; absent when disabled or for VMs with port forwards (traffic is not a call). */
  idle?: IdleTracker;
}

/** A restored, paused clone waiting in the pool. */
export interface PooledVm {
  readonly clone: Clone;
  /** Its identity's id (`pool:<key>/<id>`), renamed to the sandbox's at claim. */
  readonly vmId: string;
  readonly dir: string;
  readonly reservation: Reservation;
}

export function info(rec: VmRecord): VmInfo {
  return {
    vmId: rec.vmId,
    state: rec.state,
    reason: rec.reason,
    accelerator: rec.accelerator,
    acceleratorNote: rec.acceleratorNote,
    pid: rec.pid,
    startedUnixMs: rec.startedUnixMs,
    memoryMib: rec.memoryMib,
    vcpus: rec.vcpus,
    imageReference: rec.imageReference,
    bootMs: rec.bootMs,
    startKind: rec.startKind,
    paused: rec.idle?.paused ?? false,
  };
}

export function invalid(message: string, details: Record<string, unknown> = {}): MsbError {
  return new MsbError("INVALID_PARAMS", message, { details });
}

export async function availableMemoryBytes(): Promise<number> {
  try {
    const meminfo = await readFile("/proc/meminfo", "utf8");
    const kb = /^MemAvailable:\s+(\d+) kB$/m.exec(meminfo)?.[1];
    return kb === undefined ? freemem() : Number(kb) * 1024;
  } catch {
    return freemem();
  }
}

export function consoleSummary(vm: VmProcess | undefined, lines = 12): string {
  const tail = vm?.consoleTail(lines) ?? [];
  // A panic's stack dump pushes its one telling line out of the short tail: name it first.
  const panic = kernelPanicLine(vm?.consoleTail(200) ?? []);
  const cause = panic === undefined ? "" : ` Guest kernel panic: ${panic}.`;
  return `${cause}${tail.length > 0 ? ` Last console lines:\n${tail.join("\n")}` : ""}`;
}

/** Resolves when `p` settles or after `ms`, whichever is first; true when `p` settled. */
export async function settledWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([
      p.then(
        () => true,
        () => true,
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

export function find(ctx: VmContext, vmId: string): VmRecord {
  const { vms } = ctx;
  const rec = vms.get(vmId);
  if (rec === undefined) {
    throw new MsbError(
      "SANDBOX_NOT_FOUND",
      `No VM '${vmId}' on this host. List VMs with ListVms; create it with CreateVm.`,
      { details: { vmId } },
    );
  }
  return rec;
}

/** The VM's agent client, or the error that says why there is none. */
export function running(ctx: VmContext, vmId: string): { rec: VmRecord; client: AgentClient } {
  const rec = find(ctx, vmId);
  if (rec.state === "running" && rec.client !== undefined) return { rec, client: rec.client };
  throw notRunning(rec);
}

export function notRunning(rec: VmRecord): MsbError {
  switch (rec.state) {
    case "failed":
      return new MsbError(
        "VM_DIED",
        `VM '${rec.vmId}' is no longer running: ${rec.reason} Start it again.`,
        { details: { vmId: rec.vmId } },
      );
    case "starting":
      return new MsbError(
        "SANDBOX_BUSY",
        `VM '${rec.vmId}' is still starting; retry when CreateVm has returned.`,
        { details: { vmId: rec.vmId } },
      );
    case "stopping":
    case "stopped":
    case "running":
      return new MsbError(
        "SANDBOX_STOPPED",
        `VM '${rec.vmId}' is ${rec.state === "running" ? "not ready" : rec.state}; start it again to use it.`,
        { details: { vmId: rec.vmId, state: rec.state } },
      );
  }
}

/**
 * A failed agent call on a VM that has just died becomes VM_DIED with the reason: the socket
 * closes a moment before the QEMU exit is reported, so give the exit that moment.
 */
export async function translate(rec: VmRecord, err: unknown): Promise<unknown> {
  if (err instanceof MsbError && err.code === "AGENT_DISCONNECTED" && rec.process) {
    await settledWithin(rec.process.exited, 2_000);
    if (rec.state !== "running") return notRunning(rec);
  }
  return err;
}

export function release(rec: VmRecord): void {
  rec.idle?.dispose();
  rec.idle = undefined;
  rec.reservation?.release();
  rec.reservation = undefined;
  rec.client?.close();
  rec.client = undefined;
  rec.repls.clear();
  rec.execs.clear();
}

/** The child-exit event: an exit nobody asked for marks the VM failed at once. */
export function watchExit(ctx: VmContext, rec: VmRecord, vm: VmProcess): void {
  const { deps } = ctx;
  const { logger } = deps;
  void vm.exited.then((exit) => {
    if (rec.process !== vm) return;
    if (rec.state === "running" || rec.state === "starting") {
      rec.state = "failed";
      rec.reason = `QEMU exited unexpectedly (${describeExit(exit)}).${consoleSummary(vm)}`;
      logger.warn({ vmId: rec.vmId, exit }, "vm died");
      release(rec);
    }
  });
}

export function bootError(
  rec: VmRecord,
  vm: VmProcess,
  err: unknown,
  deadline: AbortSignal,
  caller: AbortSignal,
  bootTimeoutMs: number,
): unknown {
  if (rec.state === "failed") {
    // QEMU exited during the boot; the exit handler wrote the reason.
    return new MsbError("VM_BOOT_FAILED", `VM '${rec.vmId}' failed to boot: ${rec.reason}`, {
      details: { vmId: rec.vmId },
      cause: err,
    });
  }
  if (deadline.aborted && !caller.aborted) {
    return new MsbError(
      "VM_BOOT_TIMEOUT",
      `VM '${rec.vmId}' was not ready within ${bootTimeoutMs} ms. The host may be overloaded; retry, or raise boot_timeout_ms.${consoleSummary(vm)}`,
      { details: { vmId: rec.vmId, bootTimeoutMs }, cause: err },
    );
  }
  if (err instanceof MsbError && (err.code === "VM_BOOT_FAILED" || err.code === "CANCELLED")) {
    return err;
  }
  if (caller.aborted) return caller.reason;
  return new MsbError(
    "VM_BOOT_FAILED",
    `VM '${rec.vmId}' failed to boot: ${err instanceof Error ? err.message : String(err)}.${consoleSummary(vm)}`,
    { details: { vmId: rec.vmId }, cause: err },
  );
}

/** Forces a VM process down: QMP quit, then SIGTERM, then SIGKILL. */
export async function forceDown(vm: VmProcess): Promise<void> {
  const quit = AbortSignal.timeout(1_000);
  await vm.quit(quit).catch(() => undefined);
  if (await settledWithin(vm.exited, 1_000)) return;
  vm.kill("SIGTERM");
  if (await settledWithin(vm.exited, 1_000)) return;
  vm.kill("SIGKILL");
  await settledWithin(vm.exited, 5_000);
}

/** Output kept per call; what is beyond it is dropped and reported as truncated. */
export function createCap(ctx: VmContext): {
  take(data: Buffer): Buffer | undefined;
  truncated: boolean;
} {
  const { options } = ctx;
  let left = options.outputCapBytes;
  const cap = {
    truncated: false,
    take(data: Buffer): Buffer | undefined {
      if (left <= 0) {
        cap.truncated = true;
        return undefined;
      }
      const piece = data.length > left ? data.subarray(0, left) : data;
      if (piece.length < data.length) cap.truncated = true;
      left -= piece.length;
      return piece;
    },
  };
  return cap;
}
