import type { Admission } from "../admission.js";
import type { AgentClient } from "@msb/agent-protocol";
import type { Accelerator, AcceleratorChoice, Hypervisor } from "../hypervisor/hypervisor.js";
import type { VmIdentities } from "../identity/identity.js";
import type { NetworkPolicyStatus } from "../network/policy.js";
import type { TemplateManager } from "../templates/templates.js";
import type { VolumePolicy } from "../volumes/volume-policy.js";
import type { Logger } from "@msb/runtime";

// The VM service's own shapes (transport-free); grpc/vmm-service-server.ts maps them to and
// from the generated proto types once, at the gRPC edge.

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

/** The guest agent of a running VM, as VmService.guest hands it out (attach.ts). */
export interface GuestAccess {
  readonly client: AgentClient;
  /** Turns an agent failure into the error that explains it (e.g. the VM died). */
  translate(err: unknown): Promise<unknown>;
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
