import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, rmdir, stat } from "node:fs/promises";
import { cpus, freemem, totalmem } from "node:os";
import { dirname, isAbsolute, join } from "node:path";
import {
  createAgentClient,
  createReplSession,
  type AgentClient,
  type ProcessHandle,
  type ReplLanguage,
  type ReplSession,
} from "@msb/agent-protocol";
import { MsbError } from "@msb/errors";
import type { Logger } from "@msb/runtime";
import type { Admission, Reservation } from "./admission.js";
import { createAsyncQueue } from "./async-queue.js";
import type { GuestAccess } from "./attach.js";
import { createIdleTracker, type IdleTracker } from "./idle-pause.js";
import { parseEnv } from "./guest/env.js";
import type {
  Accelerator,
  AcceleratorChoice,
  Hypervisor,
  VmProcess,
} from "./hypervisor/hypervisor.js";
import type { PortForwardSpec } from "./hypervisor/qemu/command-line.js";
import type { VmIdentities } from "./hypervisor/qemu/identity.js";
import { describeExit } from "./hypervisor/qemu/qemu-hypervisor.js";
import type { NetworkPolicyStatus } from "./network/policy.js";
import { probeHostPorts } from "./network/port-probe.js";
import { ensureScratchDisk } from "./scratch-disk.js";
import { kernelPanicLine } from "./supervision/console-log.js";
import { createPool, type Pool } from "./templates/pool.js";
import {
  launchClone,
  personalize,
  prewarm,
  type Clone,
  type Identity,
} from "./templates/restore.js";
import { fileIdentity, type TemplateInputs } from "./templates/template-key.js";
import { poolVmDir, type Template, type TemplateManager } from "./templates/templates.js";
import { VM_FILES, isValidVmId, vmDir } from "./supervision/vm-files.js";
import { checkVolumePath, openVolumes } from "./volumes/held-volume.js";
import type { VolumePolicy } from "./volumes/volume-policy.js";

export type VmStateName = "starting" | "running" | "stopping" | "stopped" | "failed";
export type NetworkPolicy = "none" | "public" | "any";

/** A VM as callers see it. */
export interface VmInfo {
  readonly vmId: string;
  readonly state: VmStateName;
  readonly reason: string;
  readonly accelerator: Accelerator | "";
  /** Why KVM was not used, when it was not. */
  readonly acceleratorNote: string;
  readonly pid: number;
  readonly startedUnixMs: number;
  readonly memoryMib: number;
  readonly vcpus: number;
  readonly imageReference: string;
  /** Spawn to READY. */
  readonly bootMs: number;
  readonly startKind: StartKind;
  /** Paused by the idle timer; the next call resumes it. */
  readonly paused: boolean;
}

/** How a VM came to run: booted, restored from a template snapshot, or claimed from the pool. */
export type StartKind = "cold" | "template" | "pool";

/** A template as GetHostInfo reports it. */
export interface TemplateInfoView {
  readonly key: string;
  readonly imageReference: string;
  readonly memoryMib: number;
  readonly vcpus: number;
  readonly state: "building" | "ready" | "failed";
  readonly reason: string;
  readonly warmLanguage: string;
  readonly poolReady: number;
  readonly poolTarget: number;
  readonly buildMs: number;
}

export interface StartCounters {
  poolHits: number;
  poolMisses: number;
  templateRestores: number;
  coldBoots: number;
}

export interface CreateVmParams {
  readonly vmId: string;
  readonly rootfsPath: string;
  readonly imageReference: string;
  /** 0 = the configured default. */
  readonly memoryMib: number;
  readonly vcpus: number;
  readonly env: readonly string[];
  readonly workdir: string;
  readonly volumes: readonly { hostPath: string; guestPath: string; readOnly: boolean }[];
  readonly ports: readonly {
    hostPort: number;
    guestPort: number;
    protocol: string;
    hostAddress: string;
  }[];
  readonly network: NetworkPolicy;
  readonly diskQuotaBytes: number;
  readonly hostname: string;
  readonly bootTimeoutMs: number;
  readonly keepDisk: boolean;
}

export type OutputStreamName = "stdout" | "stderr";

export type ExecEvent =
  | { readonly kind: "output"; readonly stream: OutputStreamName; readonly data: Buffer }
  | {
      readonly kind: "result";
      readonly exitCode: number;
      readonly signal: number;
      readonly timedOut: boolean;
      readonly durationMs: number;
      readonly truncated: boolean;
    };

export type RunCodeEvent =
  | { readonly kind: "output"; readonly stream: OutputStreamName; readonly data: Buffer }
  | {
      readonly kind: "result";
      readonly status: "success" | "error" | "timeout";
      readonly errorType: string;
      readonly errorMessage: string;
      readonly traceback: string;
      readonly truncated: boolean;
      readonly restarted: boolean;
      readonly durationMs: number;
    };

export interface ExecParams {
  readonly vmId: string;
  readonly execId: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly env: readonly string[];
  readonly workdir: string;
  /** 0 = no timeout. */
  readonly timeoutMs: number;
  readonly stdin: Buffer;
}

export interface RunCodeParams {
  readonly vmId: string;
  readonly language: string;
  readonly code: string;
  /** 0 = the configured default. */
  readonly timeoutMs: number;
}

export interface VmMetricsInfo {
  readonly vmId: string;
  readonly running: boolean;
  readonly cpuUsagePercent: number;
  readonly memoryUsedBytes: number;
  readonly memoryTotalBytes: number;
  readonly diskUsedBytes: number;
  readonly diskTotalBytes: number;
  readonly hostRssBytes: number;
}

export interface HostInfo {
  readonly accelerator: Accelerator | "";
  readonly acceleratorNote: string;
  readonly hypervisor: string;
  readonly version: string;
  readonly hostCpus: number;
  readonly hostMemoryTotalBytes: number;
  readonly hostMemoryAvailableBytes: number;
  readonly vmsRunning: number;
  readonly maxVms: number;
  readonly isolation: IsolationInfo;
  readonly templates: readonly TemplateInfoView[];
  readonly starts: StartCounters;
  readonly vmsPaused: number;
  /** RAM held by template snapshots (tmpfs), counted in admission, and its cap. */
  readonly templateMemory: { readonly usedMib: number; readonly maxMib: number };
}

/** How VMs are confined on this host; what is off is said, never implied. */
export interface IsolationInfo {
  readonly seccomp: boolean;
  /** "qemu runs as the server's user" when the vmm-agent is not root. */
  readonly qemuUser: string;
  readonly networkPolicy: NetworkPolicyStatus;
}

/** Where the guest kernel and agent initramfs are; KERNEL_MISSING when they are not built. */
export type GuestArtifactsResolver = () => Promise<{ kernelPath: string; initramfsPath: string }>;

export interface VmServiceDeps {
  readonly hypervisor: Hypervisor;
  readonly admission: Admission;
  readonly logger: Logger;
  /** The accelerator (probed once per process); fails only when the guest cannot be found. */
  readonly accelerator: () => Promise<AcceleratorChoice>;
  /** The last known choice without waiting, for host info before the probe finished. */
  readonly artifacts: GuestArtifactsResolver;
  /** Who each VM's QEMU runs as (hypervisor/qemu/identity.ts). */
  readonly identities: VmIdentities;
  readonly networkPolicy: NetworkPolicyStatus;
  readonly seccomp: boolean;
  /** Template snapshots; undefined when MSB_TEMPLATES=0 (every VM cold-boots). */
  readonly templates?: TemplateManager;
}

export interface VmServiceOptions {
  readonly sandboxesDir: string;
  readonly defaultMemoryMib: number;
  readonly defaultVcpus: number;
  readonly defaultDiskQuotaBytes: number;
  readonly bootTimeoutMs: number;
  readonly stopTimeoutMs: number;
  readonly defaultRunTimeoutMs: number;
  readonly outputCapBytes: number;
  readonly agentVersion: string;
  /** Paused, restored VMs kept ready per template (MSB_POOL_SIZE); 0 = no pool. */
  readonly poolSize: number;
  /** A VM with no call for this long is paused (QMP stop) until the next call; 0 = never. */
  readonly idlePauseMs: number;
  /** Host directories VMs may mount (MSB_VOLUME_ROOTS), enforced here too. */
  readonly volumePolicy: VolumePolicy;
}

/** A restored, paused clone waiting in the pool. */
interface PooledVm {
  readonly clone: Clone;
  /** Its identity's id (`pool:<key>/<id>`), renamed to the sandbox's at claim. */
  readonly vmId: string;
  readonly dir: string;
  readonly reservation: Reservation;
}

/** The vmm-agent's behaviour, transport-free: the gRPC adapter only maps to and from it. */
export interface VmService {
  hostInfo(): Promise<HostInfo>;
  createVm(params: CreateVmParams, signal: AbortSignal): Promise<VmInfo>;
  stopVm(vmId: string, options: { timeoutMs: number; removeDisk: boolean }): Promise<VmInfo>;
  listVms(): VmInfo[];
  metrics(vmId: string, signal: AbortSignal): Promise<VmMetricsInfo>;
  exec(params: ExecParams, signal: AbortSignal): AsyncIterable<ExecEvent>;
  runCode(params: RunCodeParams, signal: AbortSignal): AsyncIterable<RunCodeEvent>;
  signalProcess(vmId: string, execId: string, signal: number): Promise<void>;
  readFile(
    vmId: string,
    path: string,
    maxBytes: number,
    signal: AbortSignal,
  ): Promise<{ data: Buffer; truncated: boolean }>;
  writeFile(
    vmId: string,
    path: string,
    data: Buffer,
    options: { mode: number; createParents: boolean },
    signal: AbortSignal,
  ): Promise<void>;
  /** Stops every VM (agent shutdown, then QEMU is forced); the one shutdown path. */
  stopAll(signal: AbortSignal): Promise<void>;
  /** The guest agent of a running VM, for sessions kept outside this file (attach.ts). */
  guest(vmId: string): GuestAccess;
}

/** Default cap of ReadFile when the caller gives none (proto: 16 MiB). */
const DEFAULT_READ_CAP_BYTES = 16 * 1024 * 1024;
/** Agent requests that are not user work (configure, metrics, files) get this long. */
const AGENT_CALL_TIMEOUT_MS = 30_000;
/** Extra time an exec may take past its own timeout before the host gives up on the agent. */
const EXEC_WATCHDOG_GRACE_MS = 15_000;
const REPL_LANGUAGES: readonly ReplLanguage[] = ["python", "node"];

interface VmRecord {
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

function info(rec: VmRecord): VmInfo {
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

function invalid(message: string, details: Record<string, unknown> = {}): MsbError {
  return new MsbError("INVALID_PARAMS", message, { details });
}

async function availableMemoryBytes(): Promise<number> {
  try {
    const meminfo = await readFile("/proc/meminfo", "utf8");
    const kb = /^MemAvailable:\s+(\d+) kB$/m.exec(meminfo)?.[1];
    return kb === undefined ? freemem() : Number(kb) * 1024;
  } catch {
    return freemem();
  }
}

function consoleSummary(vm: VmProcess | undefined, lines = 12): string {
  const tail = vm?.consoleTail(lines) ?? [];
  // A panic's stack dump pushes its one telling line out of the short tail: name it first.
  const panic = kernelPanicLine(vm?.consoleTail(200) ?? []);
  const cause = panic === undefined ? "" : ` Guest kernel panic: ${panic}.`;
  return `${cause}${tail.length > 0 ? ` Last console lines:\n${tail.join("\n")}` : ""}`;
}

/** Resolves when `p` settles or after `ms`, whichever is first; true when `p` settled. */
async function settledWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
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

export function createVmService(deps: VmServiceDeps, options: VmServiceOptions): VmService {
  const { hypervisor, admission, logger } = deps;
  const vms = new Map<string, VmRecord>();
  const starts: StartCounters = { poolHits: 0, poolMisses: 0, templateRestores: 0, coldBoots: 0 };
  let qemuVersion: Promise<string> | undefined;
  const pool: Pool<PooledVm> | undefined =
    deps.templates !== undefined && options.poolSize > 0
      ? createPool<PooledVm>(
          { spawn: spawnPooled, destroy: destroyPooled, died: (p) => p.clone.vm.exited, logger },
          { target: options.poolSize },
        )
      : undefined;
  if (pool !== undefined) {
    deps.templates?.onReady((t) => pool.fill(t));
    deps.templates?.onEvicted((key) => void pool.drop(key));
  }

  /** Restores a clone into the template's pool directory and pauses it. */
  async function spawnPooled(
    template: Template,
    id: string,
    signal: AbortSignal,
  ): Promise<PooledVm> {
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

  async function destroyPooled(p: PooledVm): Promise<void> {
    p.clone.client.close();
    await forceDown(p.clone.vm);
    await deps.identities.release(p.vmId);
    p.reservation.release();
    await rm(p.dir, { recursive: true, force: true });
  }

  function find(vmId: string): VmRecord {
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
  function running(vmId: string): { rec: VmRecord; client: AgentClient } {
    const rec = find(vmId);
    if (rec.state === "running" && rec.client !== undefined) return { rec, client: rec.client };
    throw notRunning(rec);
  }

  function notRunning(rec: VmRecord): MsbError {
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
  async function translate(rec: VmRecord, err: unknown): Promise<unknown> {
    if (err instanceof MsbError && err.code === "AGENT_DISCONNECTED" && rec.process) {
      await settledWithin(rec.process.exited, 2_000);
      if (rec.state !== "running") return notRunning(rec);
    }
    return err;
  }

  function release(rec: VmRecord): void {
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
  function watchExit(rec: VmRecord, vm: VmProcess): void {
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

  async function validateCreate(params: CreateVmParams): Promise<{
    volumes: { tag: string; hostPath: string; readOnly: boolean }[];
    mounts: { tag: string; path: string; readonly: boolean }[];
    ports: PortForwardSpec[];
    env: Record<string, string>;
  }> {
    if (!isValidVmId(params.vmId)) {
      throw invalid(
        `vm_id '${params.vmId}' must be 'name' or 'namespace/name' (letters, digits, '_', '.', '-').`,
        { vmId: params.vmId },
      );
    }
    if (!isAbsolute(params.rootfsPath)) {
      throw invalid("rootfs_path must be an absolute path (from ImageService.PrepareRootfs).");
    }
    const rootfs = await stat(params.rootfsPath).catch(() => undefined);
    if (rootfs?.isFile() !== true) {
      throw new MsbError(
        "IMAGE_NOT_FOUND",
        `The rootfs ${params.rootfsPath} does not exist. Prepare it with ImageService.PrepareRootfs.`,
        { details: { rootfsPath: params.rootfsPath } },
      );
    }
    if (params.workdir !== "" && !params.workdir.startsWith("/")) {
      throw invalid("workdir must be an absolute guest path.");
    }
    if (params.hostname !== "" && !/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(params.hostname)) {
      throw invalid("hostname must be 1-63 letters, digits, '-' or '.'.");
    }
    const volumes: { tag: string; hostPath: string; readOnly: boolean }[] = [];
    const mounts: { tag: string; path: string; readonly: boolean }[] = [];
    for (const [i, vol] of params.volumes.entries()) {
      if (!isAbsolute(vol.hostPath) || !isAbsolute(vol.guestPath)) {
        throw invalid("Volume host_path and guest_path must be absolute paths.", { volume: i });
      }
      // Refused early here; checked again on the directory held open at boot.
      await checkVolumePath(vol.hostPath, options.volumePolicy);
      const tag = `msbvol${i}`;
      volumes.push({ tag, hostPath: vol.hostPath, readOnly: vol.readOnly });
      mounts.push({ tag, path: vol.guestPath, readonly: vol.readOnly });
    }
    if (params.network === "none" && params.ports.length > 0) {
      throw invalid("Port forwards need a network; this VM's network is 'none'.");
    }
    const ports: PortForwardSpec[] = params.ports.map((p) => {
      const protocol = p.protocol === "" ? "tcp" : p.protocol;
      if (protocol !== "tcp" && protocol !== "udp") {
        throw invalid(`Port protocol must be 'tcp' or 'udp', got '${p.protocol}'.`);
      }
      return {
        protocol,
        hostAddress: p.hostAddress === "" ? "127.0.0.1" : p.hostAddress,
        hostPort: p.hostPort,
        guestPort: p.guestPort,
      };
    });
    const env = parseEnv(params.env, "env");
    // Last: everything else about the request is valid before host ports are touched.
    await probeHostPorts(ports);
    return { volumes, mounts, ports, env };
  }

  async function boot(
    rec: VmRecord,
    params: CreateVmParams,
    checked: Awaited<ReturnType<typeof validateCreate>>,
    signal: AbortSignal,
  ): Promise<void> {
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
          ? await templateInputs(params, diskBytes, choice.accelerator, kernelPath, initramfsPath)
          : undefined;
      const template = inputs === undefined ? undefined : deps.templates?.ready(inputs);
      if (template !== undefined && pool !== undefined) {
        const member = pool.take(template);
        if (member === undefined) starts.poolMisses++;
        else {
          starts.poolHits++;
          if (await tryClaim(rec, params, checked, template, member.value, bootTimeoutMs, signal))
            return;
        }
      }
      if (template !== undefined) {
        const restored = await tryRestore(rec, params, checked, template, bootTimeoutMs, signal);
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
      watchExit(rec, vm);
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

  async function templateInputs(
    params: CreateVmParams,
    diskBytes: number,
    accelerator: Accelerator,
    kernelPath: string,
    initramfsPath: string,
  ): Promise<TemplateInputs> {
    qemuVersion ??= hypervisor.version();
    const [kernel, initramfs, rootfs, version] = await Promise.all([
      fileIdentity(kernelPath),
      fileIdentity(initramfsPath),
      fileIdentity(params.rootfsPath),
      qemuVersion,
    ]);
    return {
      kernelPath,
      initramfsPath,
      kernel,
      initramfs,
      rootfs,
      rootfsPath: params.rootfsPath,
      imageReference: params.imageReference,
      memoryMib: memoryOf(params),
      vcpus: params.vcpus > 0 ? params.vcpus : options.defaultVcpus,
      network: params.network,
      diskQuotaBytes: diskBytes,
      qemuVersion: version,
      accelerator,
    };
  }

  function memoryOf(params: CreateVmParams): number {
    return params.memoryMib > 0 ? params.memoryMib : options.defaultMemoryMib;
  }

  function identityOf(
    rec: VmRecord,
    params: CreateVmParams,
    checked: Awaited<ReturnType<typeof validateCreate>>,
    timeoutMs: number,
  ): Identity {
    return {
      hostname: params.hostname !== "" ? params.hostname : (rec.vmId.split("/").pop() ?? ""),
      env: checked.env,
      workdir: params.workdir,
      outputCapBytes: options.outputCapBytes,
      timeoutMs,
    };
  }

  /**
   * Makes a pooled clone `rec`'s VM: its directory becomes the sandbox's, it runs again, gets
   * the port forwards and its identity. False (the clone destroyed) when that failed for a
   * reason of the clone's; the caller then restores or boots.
   */
  async function tryClaim(
    rec: VmRecord,
    params: CreateVmParams,
    checked: Awaited<ReturnType<typeof validateCreate>>,
    template: Template,
    pooled: PooledVm,
    bootTimeoutMs: number,
    signal: AbortSignal,
  ): Promise<boolean> {
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
      watchExit(rec, clone.vm);
      rec.client = clone.client;
      await clone.vm.resume(deadline);
      for (const fwd of checked.ports) await clone.vm.addPortForward(fwd, deadline);
      const restored = await personalize(
        clone,
        template,
        identityOf(rec, params, checked, bootTimeoutMs),
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
  async function tryRestore(
    rec: VmRecord,
    params: CreateVmParams,
    checked: Awaited<ReturnType<typeof validateCreate>>,
    template: Template,
    bootTimeoutMs: number,
    signal: AbortSignal,
  ): Promise<boolean> {
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
          watchExit(rec, launched);
        },
        deadline,
      );
      rec.client = clone.client;
      const restored = await personalize(
        clone,
        template,
        identityOf(rec, params, checked, bootTimeoutMs),
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

  function bootError(
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
  async function forceDown(vm: VmProcess): Promise<void> {
    const quit = AbortSignal.timeout(1_000);
    await vm.quit(quit).catch(() => undefined);
    if (await settledWithin(vm.exited, 1_000)) return;
    vm.kill("SIGTERM");
    if (await settledWithin(vm.exited, 1_000)) return;
    vm.kill("SIGKILL");
    await settledWithin(vm.exited, 5_000);
  }

  async function stop(rec: VmRecord, timeoutMs: number, removeDisk: boolean): Promise<VmInfo> {
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

  /** Output kept per call; what is beyond it is dropped and reported as truncated. */
  function createCap(): { take(data: Buffer): Buffer | undefined; truncated: boolean } {
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

  const service: VmService = {
    async hostInfo() {
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
    },

    async createVm(params, signal) {
      const existing = vms.get(params.vmId);
      if (existing !== undefined && existing.state !== "stopped" && existing.state !== "failed") {
        throw new MsbError(
          "SANDBOX_EXISTS",
          `VM '${params.vmId}' already exists and is ${existing.state}. Stop it first or pick another id.`,
          { details: { vmId: params.vmId, state: existing.state } },
        );
      }
      const checked = await validateCreate(params);
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
      rec.booting = boot(rec, params, checked, bootSignal);
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
      const rec = find(vmId);
      if (rec.stopping === undefined) {
        rec.stopping = stop(rec, timeoutMs > 0 ? timeoutMs : options.stopTimeoutMs, removeDisk);
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

    async metrics(vmId, signal) {
      const rec = find(vmId);
      const host = (await rec.process?.hostRssBytes()) ?? 0;
      if (rec.state !== "running" || rec.client === undefined) {
        return {
          vmId,
          running: false,
          cpuUsagePercent: 0,
          memoryUsedBytes: 0,
          memoryTotalBytes: 0,
          diskUsedBytes: 0,
          diskTotalBytes: 0,
          hostRssBytes: host,
        };
      }
      try {
        const m = await rec.client.metrics({ signal, timeoutMs: AGENT_CALL_TIMEOUT_MS });
        return {
          vmId,
          running: true,
          cpuUsagePercent: m.cpuPct,
          memoryUsedBytes: m.memUsedBytes,
          memoryTotalBytes: m.memTotalBytes,
          diskUsedBytes: m.diskUsedBytes,
          diskTotalBytes: m.diskTotalBytes,
          hostRssBytes: host,
        };
      } catch (err) {
        throw await translate(rec, err);
      }
    },

    async *exec(params, signal) {
      const { rec, client } = running(params.vmId);
      if (params.command === "") throw invalid("command is required.");
      if (params.execId !== "" && rec.execs.has(params.execId)) {
        throw invalid(`exec_id '${params.execId}' is already running in VM '${rec.vmId}'.`);
      }
      const env = parseEnv(params.env, "env");
      const queue = createAsyncQueue<ExecEvent>();
      const cap = createCap();
      let handle: ProcessHandle;
      try {
        handle = await client.exec(
          {
            argv: [params.command, ...params.args],
            env,
            ...(params.workdir === "" ? {} : { cwd: params.workdir }),
            stdin: params.stdin.length > 0,
            timeoutMs: params.timeoutMs,
          },
          {
            signal,
            timeoutMs: AGENT_CALL_TIMEOUT_MS,
            onOutput: (chunk) => {
              const data = cap.take(chunk.data);
              if (data !== undefined) queue.push({ kind: "output", stream: chunk.stream, data });
            },
          },
        );
      } catch (err) {
        throw await translate(rec, err);
      }
      if (params.execId !== "") rec.execs.set(params.execId, handle);
      if (params.stdin.length > 0) {
        void handle
          .writeStdin(params.stdin)
          .then(() => handle.closeStdin())
          .catch(() => undefined);
      }
      // The guest enforces the timeout; this only catches a guest that stopped answering.
      const watchdog =
        params.timeoutMs > 0
          ? setTimeout(() => {
              void handle.kill().catch(() => undefined);
              queue.end(
                new MsbError(
                  "AGENT_TIMEOUT",
                  `The guest did not report the end of the command ${EXEC_WATCHDOG_GRACE_MS} ms after its timeout; the VM may be overloaded.`,
                ),
              );
            }, params.timeoutMs + EXEC_WATCHDOG_GRACE_MS)
          : undefined;
      handle.exit.then(
        (exit) => {
          queue.push({
            kind: "result",
            exitCode: exit.exitCode,
            signal: exit.signal ?? 0,
            timedOut: exit.timedOut,
            durationMs: exit.durationMs,
            truncated: cap.truncated,
          });
          queue.end();
        },
        (err: unknown) => {
          void translate(rec, err).then((e) => queue.end(e));
        },
      );
      let finished = false;
      try {
        for await (const event of queue) {
          if (event.kind === "result") finished = true;
          yield event;
        }
      } finally {
        clearTimeout(watchdog);
        if (rec.execs.get(params.execId) === handle) rec.execs.delete(params.execId);
        // The caller went away before the end: the process must not run on unobserved.
        if (!finished) void handle.kill().catch(() => undefined);
      }
    },

    async *runCode(params, signal) {
      const { rec, client } = running(params.vmId);
      const language = params.language as ReplLanguage;
      if (!REPL_LANGUAGES.includes(language)) {
        throw invalid(`language must be one of ${REPL_LANGUAGES.join(", ")}.`, {
          language: params.language,
        });
      }
      let session = rec.repls.get(language);
      if (session === undefined) {
        session = createReplSession(client, {
          language,
          ...(rec.workdir === "" ? {} : { cwd: rec.workdir }),
          maxOutputBytes: options.outputCapBytes,
        });
        rec.repls.set(language, session);
      }
      const queue = createAsyncQueue<RunCodeEvent>();
      const cap = createCap();
      const timeoutMs = params.timeoutMs > 0 ? params.timeoutMs : options.defaultRunTimeoutMs;
      session
        .run(params.code, {
          timeoutMs,
          signal,
          onOutput: ({ stream, text }) => {
            const data = cap.take(Buffer.from(text, "utf8"));
            if (data !== undefined) queue.push({ kind: "output", stream, data });
          },
        })
        .then(
          (result) => {
            // The interpreter "died" because the agent connection did (QEMU killed, guest
            // panic): that is the VM's death, not a REPL restart; report it as such.
            if (result.error?.type === "ReplDied" && client.closedReason !== undefined) {
              void translate(rec, client.closedReason).then((e) => queue.end(e));
              return;
            }
            queue.push({
              kind: "result",
              status: result.status,
              errorType: result.error?.type ?? "",
              errorMessage: result.error?.message ?? "",
              traceback: result.error?.traceback ?? "",
              truncated: cap.truncated || result.truncated,
              restarted: result.restarted,
              durationMs: result.durationMs,
            });
            queue.end();
          },
          (err: unknown) => {
            void translate(rec, err).then((e) => queue.end(e));
          },
        );
      yield* queue;
    },

    guest(vmId) {
      const { rec, client } = running(vmId);
      return { client, translate: (err) => translate(rec, err) };
    },

    async signalProcess(vmId, execId, sig) {
      const { rec } = running(vmId);
      const handle = rec.execs.get(execId);
      if (handle === undefined) {
        throw invalid(`No running exec '${execId}' in VM '${vmId}'.`, { vmId, execId });
      }
      if (!Number.isInteger(sig) || sig < 1 || sig > 64) throw invalid("signal must be 1-64.");
      try {
        await handle.signal(sig, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
      } catch (err) {
        throw await translate(rec, err);
      }
    },

    async readFile(vmId, path, maxBytes, signal) {
      const { rec, client } = running(vmId);
      if (!path.startsWith("/")) throw invalid("path must be an absolute guest path.");
      try {
        const r = await client.readFile(path, {
          maxBytes: maxBytes > 0 ? maxBytes : DEFAULT_READ_CAP_BYTES,
          signal,
          timeoutMs: AGENT_CALL_TIMEOUT_MS,
        });
        return { data: r.data, truncated: r.truncated };
      } catch (err) {
        throw await translate(rec, err);
      }
    },

    async writeFile(vmId, path, data, { mode, createParents }, signal) {
      const { rec, client } = running(vmId);
      if (!path.startsWith("/")) throw invalid("path must be an absolute guest path.");
      try {
        await client.writeFile(path, data, {
          mode: mode > 0 ? mode : 0o644,
          mkdirs: createParents,
          signal,
          timeoutMs: AGENT_CALL_TIMEOUT_MS,
        });
      } catch (err) {
        throw await translate(rec, err);
      }
    },

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
