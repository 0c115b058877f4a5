// The public shapes of the agent client: call options, operation parameters and results, and
// the handle of a guest process. Shared by the connection, process and client modules.
import type { ExitStatus } from "./messages.js";

/** Options of an AgentClient. */
export interface AgentClientOptions {
  /** Deadline of a request when the call gives none, in ms. Default 30 000. */
  readonly requestTimeoutMs?: number;
  /** Told about non-fatal oddities (an ERROR frame on a finished stream, …). */
  readonly onWarning?: (message: string) => void;
}

/** Per-call options: every call has a deadline and can be cancelled. */
export interface CallOptions {
  /** Deadline for the agent's answer, in ms. Defaults to the client's requestTimeoutMs. */
  readonly timeoutMs?: number;
  readonly signal?: AbortSignal;
}

/** `configure` parameters; every field is optional and the call can be repeated. */
export interface ConfigureParams {
  readonly hostname?: string;
  /** Base environment of every later exec (replaces the previous one). */
  readonly env?: Readonly<Record<string, string>>;
  readonly workdir?: string;
  /** 9p shares: `-fsdev local,id=X,path=…,security_model=… -device virtio-9p-device,fsdev=X,mount_tag=TAG`. */
  readonly mounts?: ReadonlyArray<{ tag: string; path: string; readonly?: boolean }>;
  /** Wall clock to set, ms since the epoch (after a snapshot restore the guest clock is stale). */
  readonly timeUnixMs?: number;
  /** Up to 512 bytes fed to the guest RNG with entropy credit. */
  readonly entropy?: Uint8Array;
  readonly network?: { enabled?: boolean; ip?: string; gateway?: string; dns?: readonly string[] };
}

/** `exec` parameters (docs/agent-protocol.md, "exec"). */
export interface ExecParams {
  readonly argv: readonly string[];
  /** Merged over the configured base environment. */
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  /** Give the process a stdin pipe (else /dev/null). */
  readonly stdin?: boolean;
  /** Kill the whole process group after this many ms; EXIT then says timedOut. 0 = none. */
  readonly timeoutMs?: number;
  readonly rlimits?: Readonly<Record<string, number | readonly [number, number]>>;
  /** Run on a pseudo-terminal (stdout and stderr merge into stdout). */
  readonly pty?: { rows: number; cols: number };
  /** Give the process a control channel on fd 3 (CTRL_IN/CTRL_OUT frames). */
  readonly ctrl?: boolean;
  readonly uid?: number;
  readonly gid?: number;
}

export interface OutputChunk {
  readonly stream: "stdout" | "stderr";
  readonly data: Buffer;
}

export interface ExecOptions extends CallOptions {
  /** Receives output as it arrives (flow-control credit is returned at once). Without it,
   * read `output()`; past `highWaterMarkBytes` unread, the process is paused. */
  readonly onOutput?: (chunk: OutputChunk) => void;
  /** Receives the control channel's bytes (only with `ctrl: true`). */
  readonly onCtrl?: (data: Buffer) => void;
  /** Unread output kept before back-pressure pauses the process. Default 1 MiB. */
  readonly highWaterMarkBytes?: number;
}

/** A running process in the guest. `exit` settles once all its output has been delivered. */
export interface ProcessHandle {
  readonly stream: number;
  readonly pid: number;
  readonly exit: Promise<ExitStatus>;
  /** Output chunks in order; ends after the process exits. Only without `onOutput`. */
  output(): AsyncIterableIterator<OutputChunk>;
  writeStdin(data: Uint8Array | string): Promise<void>;
  closeStdin(): Promise<void>;
  writeCtrl(data: Uint8Array | string): Promise<void>;
  /** Sends a signal to the process group (or only the process with `group: false`). */
  signal(signal: string | number, options?: CallOptions & { group?: boolean }): Promise<void>;
  resize(rows: number, cols: number, options?: CallOptions): Promise<void>;
  /** SIGKILL to the process's whole group (and cgroup). */
  kill(options?: CallOptions): Promise<void>;
}

/** Result of `run`: an exec whose output is collected up to a cap. */
export interface RunResult {
  readonly exit: ExitStatus;
  readonly output: readonly OutputChunk[];
  readonly stdout: Buffer;
  readonly stderr: Buffer;
  /** Output past `maxOutputBytes` was dropped (the process was not paused). */
  readonly truncated: boolean;
}
