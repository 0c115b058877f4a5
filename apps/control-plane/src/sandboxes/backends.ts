/**
 * The services the control plane drives, as it needs them. Production implementations are
 * the gRPC clients in `../grpc/`; tests use in-memory fakes. Every method takes an
 * AbortSignal; implementations add their own deadline and throw MsbError (SERVICE_UNAVAILABLE
 * when the service is down, the service's own code otherwise).
 */

/** A bootable root filesystem for an image (image-service PrepareRootfs). */
export interface PreparedRootfs {
  readonly path: string;
  /** Normalised reference, e.g. `docker.io/microsandbox/python:latest`. */
  readonly imageReference: string;
  readonly manifestDigest: string;
  /** The image's own env (`K=V`), applied before the sandbox's. */
  readonly env: readonly string[];
  /** The image's working directory ("" when it has none). */
  readonly workdir: string;
}

export interface PrepareRootfsOptions {
  /**
   * Pull the image when it is not in the local store. Default true. False for callers that
   * may not make the server contact that registry: a missing image is then IMAGE_NOT_FOUND.
   */
  readonly pullIfMissing?: boolean;
}

export interface ImageBackend {
  prepareRootfs(
    reference: string,
    signal: AbortSignal,
    options?: PrepareRootfsOptions,
  ): Promise<PreparedRootfs>;
  /** Resolves when the service answers; throws SERVICE_UNAVAILABLE when it does not. */
  ping(signal: AbortSignal): Promise<void>;
}

export type VmStatus = "starting" | "running" | "stopping" | "stopped" | "failed" | "unknown";

/** How the vmm-agent started a VM: booted, restored from a template snapshot, or taken from the warm pool. */
export type StartKind = "cold" | "template" | "pool";

export interface VmInfo {
  readonly vmId: string;
  readonly status: VmStatus;
  readonly reason: string;
  readonly accelerator: string;
  /** Unknown (absent) when the vmm-agent does not report it. */
  readonly startKind?: StartKind;
  /** Spawn (or restore) to the guest agent's READY, in ms; absent when not reported. */
  readonly bootMs?: number;
  /** Paused because it was idle; resumes on its next call. */
  readonly paused?: boolean;
}

export interface VmVolume {
  readonly hostPath: string;
  readonly guestPath: string;
  readonly readOnly: boolean;
}

export interface VmPort {
  readonly hostPort: number;
  readonly guestPort: number;
  readonly protocol: "tcp" | "udp";
}

export type VmNetwork = "none" | "public" | "any";

export interface CreateVmSpec {
  /** `namespace/name` (docs/conventions.md). */
  readonly vmId: string;
  readonly rootfs: PreparedRootfs;
  readonly memoryMib: number;
  readonly cpus: number;
  readonly env: readonly string[];
  readonly workdir: string;
  readonly volumes: readonly VmVolume[];
  readonly ports: readonly VmPort[];
  readonly network: VmNetwork;
  readonly hostname: string;
  /** 0: the vmm-agent's default. */
  readonly bootTimeoutMs: number;
  /** Keep the scratch disk of an earlier run (state survives stop/start). */
  readonly keepDisk: boolean;
}

export interface VmUsage {
  readonly running: boolean;
  readonly cpuPercent: number;
  readonly memoryUsedBytes: number;
  readonly diskUsedBytes: number;
}

/** One template snapshot of the vmm-agent and its warm pool (GetHostInfo). */
export interface TemplateInfo {
  /** Short hash of everything the snapshot depends on. */
  readonly key: string;
  readonly imageReference: string;
  readonly memoryMib: number;
  readonly vcpus: number;
  /** "building", "ready" or "failed". */
  readonly state: string;
  /** Why it failed ("" otherwise). */
  readonly reason: string;
  /** Language whose REPL is warm in the snapshot, "" for none. */
  readonly warmLanguage: string;
  /** Paused, restored VMs ready to be claimed. */
  readonly poolReady: number;
  readonly poolTarget: number;
  /** Boot + warm-up + snapshot time, ms. */
  readonly buildMs: number;
}

/** CreateVm outcomes by path since the vmm-agent started. */
export interface StartCounters {
  readonly poolHits: number;
  readonly poolMisses: number;
  readonly templateRestores: number;
  readonly coldBoots: number;
}

export interface HostInfo {
  readonly accelerator: string;
  readonly hypervisor: string;
  readonly version: string;
  readonly note: string;
  readonly vmsRunning?: number;
  readonly maxVms?: number;
  /** Idle VMs paused by the vmm-agent. */
  readonly vmsPaused?: number;
  readonly templates?: readonly TemplateInfo[];
  readonly starts?: StartCounters;
  /** Which host-side protections confine the VMs; absent from a vmm-agent that predates it. */
  readonly isolation?: HostIsolation;
}

/** What the vmm-agent reports about QEMU seccomp, QEMU's user and the network policy. */
export interface HostIsolation {
  readonly seccomp: boolean;
  readonly qemuUser: string;
  readonly networkPolicyEnforced: boolean;
  /** Why the network policy is not enforced, when it is not. */
  readonly networkPolicyNote: string;
}

export type OutputStreamName = "stdout" | "stderr";

export interface OutputEvent {
  readonly type: "output";
  readonly stream: OutputStreamName;
  readonly data: Uint8Array;
}

export interface RunCodeResultEvent {
  readonly type: "result";
  readonly status: "success" | "error" | "timeout";
  readonly errorType: string;
  readonly errorMessage: string;
  readonly traceback: string;
  readonly truncated: boolean;
  readonly restarted: boolean;
  readonly durationMs: number;
}

export interface ExecResultEvent {
  readonly type: "result";
  readonly exitCode: number;
  readonly signal: number;
  readonly timedOut: boolean;
  readonly truncated: boolean;
  readonly durationMs: number;
}

export interface RunCodeRequest {
  readonly vmId: string;
  readonly language: "python" | "node";
  readonly code: string;
  readonly timeoutMs: number;
}

export interface ExecRequest {
  readonly vmId: string;
  readonly execId: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly timeoutMs: number;
}

/** An interactive process to start (vmm Attach). */
export interface AttachSpec {
  readonly vmId: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly env: readonly string[];
  readonly workdir: string;
  /** A pseudo-terminal of this size; undefined = pipes. */
  readonly pty: { readonly rows: number; readonly cols: number } | undefined;
}

export type AttachInput =
  | { readonly type: "stdin"; readonly data: Uint8Array }
  | { readonly type: "resize"; readonly rows: number; readonly cols: number }
  | { readonly type: "signal"; readonly signal: number }
  | { readonly type: "eof" };

export type AttachEvent =
  | { readonly type: "started"; readonly pid: number }
  | OutputEvent
  | {
      readonly type: "exit";
      readonly exitCode: number;
      readonly signal: number;
      readonly durationMs: number;
    };

/** A running attach: inputs in, events out (`started` first, `exit` last). */
export interface AttachSession {
  /** Resolves once the input is on its way (back-pressure: await before sending more). */
  send(input: AttachInput): Promise<void>;
  readonly events: AsyncIterable<AttachEvent>;
}

export interface StopVmOptions {
  /** Delete the VM's scratch disk too. Default false: a stopped sandbox keeps its files. */
  readonly removeDisk?: boolean;
}

export interface VmmBackend {
  hostInfo(signal: AbortSignal): Promise<HostInfo>;
  /** Resolves once the guest agent said READY. */
  createVm(spec: CreateVmSpec, signal: AbortSignal): Promise<VmInfo>;
  /**
   * Throws SANDBOX_NOT_FOUND when the vmm-agent does not know the VM. `removeDisk` also deletes
   * its scratch disk (the sandbox's files), also for a VM that is already stopped or that the
   * vmm-agent no longer tracks (then it throws nothing).
   */
  stopVm(vmId: string, signal: AbortSignal, options?: StopVmOptions): Promise<void>;
  listVms(signal: AbortSignal): Promise<VmInfo[]>;
  vmUsage(vmId: string, signal: AbortSignal): Promise<VmUsage>;
  /** Output events, then exactly one result event. */
  runCode(
    request: RunCodeRequest,
    signal: AbortSignal,
  ): AsyncIterable<OutputEvent | RunCodeResultEvent>;
  /** Output events, then exactly one result event. */
  exec(request: ExecRequest, signal: AbortSignal): AsyncIterable<OutputEvent | ExecResultEvent>;
  /** Reads at most `maxBytes` of a guest file; `truncated` when it is longer. */
  readFile(
    vmId: string,
    path: string,
    maxBytes: number,
    signal: AbortSignal,
  ): Promise<{ data: Uint8Array; truncated: boolean }>;
  writeFile(
    vmId: string,
    path: string,
    data: Uint8Array,
    options: { readonly mode: number; readonly createParents: boolean },
    signal: AbortSignal,
  ): Promise<void>;
  /** Starts an interactive process; aborting `signal` ends the session and kills it. */
  attach(spec: AttachSpec, signal: AbortSignal): AttachSession;
}
