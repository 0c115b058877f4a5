/** The sandbox service's contract: its methods, their results (the wire shapes) and its dependencies. */
import type { Logger } from "@msb/runtime";
import type { Caller } from "../auth/caller.js";
import type {
  AttachSession,
  ImageBackend,
  OutputStreamName,
  StartKind,
  VmmBackend,
} from "./backends.js";
import type { OutputLine } from "./output.js";
import type { SandboxPolicy } from "./policy.js";
import type {
  AttachParams,
  FilesReadParams,
  FilesWriteParams,
  MetricsParams,
  RunCodeParams,
  RunCommandParams,
  StartParams,
  StopParams,
} from "./schemas.js";
import type { SandboxState } from "./state.js";
import type { SandboxStore } from "./store.js";

export interface StartResult {
  readonly namespace: string;
  readonly name: string;
  readonly state: "running";
  /** True when the sandbox was already running with this configuration (idempotent start). */
  readonly alreadyRunning: boolean;
  readonly image: string;
  /** How its VM was started (for an idempotent start: how the running VM was); null when the vmm-agent does not say. */
  readonly startKind: StartKind | null;
  /** Spawn or restore to the guest agent's READY, ms; null when not reported. */
  readonly bootMs: number | null;
}

export interface StopResult {
  readonly namespace: string;
  readonly name: string;
  readonly state: "stopped";
  /** True when there was nothing to stop. */
  readonly alreadyStopped: boolean;
  /** True when the sandbox was also deleted (`remove: true`): disk and record are gone. */
  readonly removed: boolean;
}

/** One entry of `sandbox.metrics.get` (SPEC.md shape, plus `state`, `reason`, `image`). */
export interface SandboxMetricsEntry {
  readonly namespace: string;
  readonly name: string;
  readonly running: boolean;
  /** Percent of one vCPU times vcpus. */
  readonly cpu_usage: number;
  /** MiB. */
  readonly memory_usage: number;
  /** Bytes of the writable scratch disk in use. */
  readonly disk_usage: number;
  readonly state: SandboxState;
  readonly reason: string | null;
  readonly image: string;
  /** How the running VM was started ("cold", "template", "pool"); null when stopped or unknown. */
  readonly start_kind: StartKind | null;
  /** Its spawn/restore to READY time in ms; null when stopped or unknown. */
  readonly boot_ms: number | null;
  /** Paused by the vmm-agent because it was idle (it resumes on the next call). */
  readonly paused: boolean;
}

export interface MetricsResult {
  readonly sandboxes: SandboxMetricsEntry[];
}

/** `sandbox.repl.run` result: what the original SDKs read (`status`, `output`) and more. */
export interface RunCodeResult {
  readonly status: "success" | "error" | "timeout";
  readonly language: string;
  readonly output: OutputLine[];
  readonly has_error: boolean;
  /** The exception (status "error") or the timeout (status "timeout"). */
  readonly error?: { readonly type: string; readonly message: string; readonly traceback: string };
  /** Output beyond the cap was dropped (a last stderr line says so too). */
  readonly truncated: boolean;
  /** The REPL had to be restarted: variables from earlier cells are gone. */
  readonly restarted: boolean;
  readonly duration_ms: number;
}

/** `sandbox.command.run` result. */
export interface RunCommandResult {
  readonly command: string;
  readonly args: string[];
  readonly exit_code: number;
  readonly success: boolean;
  readonly output: OutputLine[];
  /** Signal that killed the command, 0 if none. */
  readonly signal: number;
  readonly truncated: boolean;
  readonly duration_ms: number;
}

/**
 * The one place that decides about sandboxes; JSON-RPC and MCP are thin adapters over it.
 * Every method checks the caller's namespace, so adapters never do.
 */
export interface SandboxService {
  /** Boots the sandbox (or finds it running with the same config) and resolves once its guest agent answered. */
  start(caller: Caller, params: StartParams): Promise<StartResult>;
  /**
   * Stops the sandbox's VM; with `remove` also deletes its scratch disk and its record, so
   * later calls get SANDBOX_NOT_FOUND (used by `msb exe` for its temporary sandboxes).
   */
  stop(caller: Caller, params: StopParams): Promise<StopResult>;
  metrics(caller: Caller, params: MetricsParams, signal: AbortSignal): Promise<MetricsResult>;
  /** `signal` aborts the run when the caller goes away; `observer` sees output as it comes. */
  runCode(
    caller: Caller,
    params: RunCodeParams,
    signal: AbortSignal,
    observer?: RunObserver,
  ): Promise<RunCodeResult>;
  runCommand(
    caller: Caller,
    params: RunCommandParams,
    signal: AbortSignal,
    observer?: RunObserver,
  ): Promise<RunCommandResult>;
  /** Writes a guest file (base64 in `data`). */
  writeFile(
    caller: Caller,
    params: FilesWriteParams,
    signal: AbortSignal,
  ): Promise<FileWriteResult>;
  /** Reads a guest file, base64 in the answer. */
  readFile(caller: Caller, params: FilesReadParams, signal: AbortSignal): Promise<FileReadResult>;
  /**
   * Starts an interactive process in a running sandbox (the WebSocket attach route). Checks
   * happen before it returns; aborting `signal` ends the session and kills the process.
   */
  attach(caller: Caller, params: AttachParams, signal: AbortSignal): AttachSession;
  /**
   * Makes the database agree with the vmm-agent after a restart: a sandbox the database
   * thinks is live but the vmm-agent does not run becomes failed ("VM lost while the control
   * plane was down"). Throws SERVICE_UNAVAILABLE when the vmm-agent is down (retry later).
   * With `live` (the periodic pass while serving), only sandboxes that were already running
   * before the vmm-agent was asked are checked — starts and stops in flight are left to
   * their own calls — and a VM that died (QEMU killed, guest panic, vmm-agent restarted) is
   * recorded as failed with the vmm-agent's reason, so the database never keeps saying
   * `running` for a VM that is gone.
   */
  reconcile(signal: AbortSignal, options?: ReconcileOptions): Promise<ReconcileReport>;
}

export interface ReconcileOptions {
  /** A pass while serving (see `reconcile`), not the one after the control plane started. */
  readonly live?: boolean;
}

/** `sandbox.files.write` result. */
export interface FileWriteResult {
  readonly path: string;
  /** Bytes written. */
  readonly size: number;
}

/** `sandbox.files.read` result. */
export interface FileReadResult {
  readonly path: string;
  readonly data: string;
  readonly encoding: "base64";
  /** Bytes in `data` (decoded). */
  readonly size: number;
  /** The file is longer than `max_bytes`. */
  readonly truncated: boolean;
}

/** Watches a run as it happens (streaming answers, docs/streaming.md). */
export interface RunObserver {
  /** The run was accepted (sandbox running, params valid) and is about to start. */
  onStart?(): void;
  /**
   * Output as it arrives: each chunk decoded as UTF-8 per stream (characters split across
   * chunks are kept whole), newlines kept; nothing more once the output cap is reached. The
   * server's own notes come as stderr lines ending in a newline.
   */
  onOutput?(stream: OutputStreamName, text: string): void;
}

export interface ReconcileReport {
  readonly checked: number;
  readonly lost: string[];
  readonly orphans: string[];
}

export interface SandboxServiceDeps {
  readonly store: SandboxStore;
  readonly image: ImageBackend;
  readonly vmm: VmmBackend;
  readonly policy: SandboxPolicy;
  readonly logger: Logger;
}

export interface SandboxServiceOptions {
  /** Output kept per run, in bytes (stdout + stderr). */
  readonly outputLimitBytes: number;
  /** Run timeout when the caller gives none. */
  readonly runDefaultMs: number;
  /** Largest run timeout a caller may ask for. */
  readonly runMaxMs: number;
  /**
   * Aborts starts and stops in flight: the process is shutting down. A start is deliberately
   * not tied to its HTTP request: a client that gives up does not leave a half-booted VM,
   * and its retry finds the sandbox running.
   */
  readonly signal?: AbortSignal;
}
