import type { Duplex } from "node:stream";
import { MsbError, type ErrorCode } from "@msb/errors";
import type { z } from "zod";
import {
  DEFAULT_WINDOW_BYTES,
  FrameDecoder,
  FrameKind,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  encodeFrame,
  protocolError,
  type Frame,
} from "./frame.js";
import {
  agentErrorSchema,
  bytesSchema,
  configureResultSchema,
  exitSchema,
  helloSchema,
  listDirSchema,
  metricsSchema,
  okSchema,
  pidSchema,
  pongSchema,
  readFileResultSchema,
  type DirEntry,
  type ExitStatus,
  type Hello,
  type Metrics,
} from "./messages.js";

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

const CHUNK_BYTES = 65_536;

type Deferred<T> = { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void };
function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

const AGENT_CODE_MAP: Readonly<Record<string, ErrorCode>> = {
  bad_request: "INVALID_PARAMS",
  unknown_op: "INVALID_PARAMS",
  not_found: "FILE_NOT_FOUND",
  not_a_directory: "INVALID_PARAMS",
  is_a_directory: "INVALID_PARAMS",
  permission_denied: "INVALID_PARAMS",
  exists: "INVALID_PARAMS",
  no_space: "CAPACITY_EXHAUSTED",
  too_many_streams: "CAPACITY_EXHAUSTED",
  no_such_stream: "INVALID_PARAMS",
  stream_busy: "AGENT_PROTOCOL_ERROR",
  window_exceeded: "AGENT_PROTOCOL_ERROR",
  bad_frame: "AGENT_PROTOCOL_ERROR",
  bad_frame_length: "AGENT_PROTOCOL_ERROR",
  io_error: "INTERNAL",
  spawn_failed: "INTERNAL",
  internal: "INTERNAL",
};

/** Turns an agent `{error:{code,message}}` into an MsbError; the agent's code stays in details. */
function agentError(op: string, code: string, message: string): MsbError {
  // A code outside docs/agent-protocol.md comes from a broken or hostile guest, not from a
  // fault of msb: the caller sees AGENT_PROTOCOL_ERROR.
  return new MsbError(AGENT_CODE_MAP[code] ?? "AGENT_PROTOCOL_ERROR", `${op}: ${message}`, {
    details: { agentCode: code, op },
  });
}

/** State of one stream (one request id). */
interface StreamState {
  readonly id: number;
  readonly op: string;
  /** Resolves with the RESPONSE payload (JSON, already checked for `error`). */
  readonly response: Deferred<unknown>;
  responded: boolean;
  /** Host → guest credit for STDIN/CTRL_IN. */
  sendCredit: number;
  /** Guest → host credit for STDOUT/STDERR/CTRL_OUT: what the guest may still send. A guest
   * that sends more is hostile or broken, and host memory would no longer be bounded. */
  recvCredit: number;
  creditWaiters: Array<() => void>;
  onData?: (kind: FrameKind, payload: Buffer) => void;
  onExit?: (exit: ExitStatus) => void;
  /** Ends the stream when the RESPONSE arrives (all ops but exec). */
  endOnResponse: boolean;
  /** Resolves once the REQUEST is written: data frames may only follow it. */
  readonly requestSent: Deferred<void>;
  fail(err: MsbError): void;
}

/**
 * Client of the guest agent over any byte stream (a unix socket to QEMU's virtio-serial
 * chardev today; vsock later). Requests are multiplexed on stream ids; output is flow
 * controlled per stream; every call has a deadline; when the connection drops every
 * outstanding call fails with AGENT_DISCONNECTED.
 *
 * Nothing is sent before the agent's HELLO: bytes written before the guest opens its port
 * are discarded by the guest kernel, possibly in the middle of a frame.
 */
export class AgentClient {
  readonly #io: Duplex;
  readonly #decoder = new FrameDecoder({ from: "guest" });
  readonly #streams = new Map<number, StreamState>();
  readonly #timeoutMs: number;
  readonly #warn: (message: string) => void;
  #nextId = 1;
  #hello: Hello | undefined;
  #helloWaiters: Array<Deferred<Hello>> = [];
  #closed: MsbError | undefined;
  #windowBytes = DEFAULT_WINDOW_BYTES;
  #maxFrameBytes = MAX_FRAME_BYTES;
  readonly #closeListeners: Array<(err: MsbError) => void> = [];

  constructor(io: Duplex, options: AgentClientOptions = {}) {
    this.#io = io;
    this.#timeoutMs = options.requestTimeoutMs ?? 30_000;
    this.#warn = options.onWarning ?? (() => undefined);
    io.on("data", (chunk: Buffer) => this.#onData(chunk));
    io.on("error", (err) => this.#close(this.#disconnected(err)));
    io.on("end", () => this.#close(this.#disconnected()));
    io.on("close", () => this.#close(this.#disconnected()));
  }

  /** The latest HELLO, if one arrived. */
  get hello(): Hello | undefined {
    return this.#hello;
  }

  /** Set once the connection is gone, with the reason. */
  get closedReason(): MsbError | undefined {
    return this.#closed;
  }

  /** Calls `listener` once when the connection closes (at once if it already has). */
  onClose(listener: (err: MsbError) => void): void {
    if (this.#closed) listener(this.#closed);
    else this.#closeListeners.push(listener);
  }

  /** Waits for the agent's HELLO (boot errors are in it: check `ready`). */
  async waitHello(options: CallOptions = {}): Promise<Hello> {
    if (this.#hello) return this.#hello;
    if (this.#closed) throw this.#closed;
    const d = deferred<Hello>();
    this.#helloWaiters.push(d);
    return this.#withDeadline(d.promise, options, "waiting for the guest agent's hello", () => {
      this.#helloWaiters = this.#helloWaiters.filter((w) => w !== d);
    });
  }

  async ping(options: CallOptions = {}): Promise<{ uptimeMs: number }> {
    const r = await this.#simple("ping", {}, pongSchema, options);
    return { uptimeMs: r.uptime_ms };
  }

  /** Asks the agent for its HELLO again (e.g. after re-adopting a running VM). */
  async requestHello(options: CallOptions = {}): Promise<Hello> {
    const hello = await this.#simple("hello", {}, helloSchema, options);
    this.#setHello(hello);
    return hello;
  }

  /** Applies identity and environment. Returns the agent's per-item errors (empty = all applied). */
  async configure(
    params: ConfigureParams,
    options: CallOptions = {},
  ): Promise<{ errors: string[] }> {
    const wire: Record<string, unknown> = {};
    if (params.hostname !== undefined) wire.hostname = params.hostname;
    if (params.env !== undefined) wire.env = params.env;
    if (params.workdir !== undefined) wire.workdir = params.workdir;
    if (params.mounts !== undefined) wire.mounts = params.mounts;
    if (params.timeUnixMs !== undefined) wire.time_unix_ms = Math.trunc(params.timeUnixMs);
    if (params.entropy !== undefined) wire.entropy = Buffer.from(params.entropy).toString("base64");
    if (params.network !== undefined) wire.network = params.network;
    return this.#simple("configure", wire, configureResultSchema, options);
  }

  async metrics(options: CallOptions = {}): Promise<Metrics> {
    return this.#simple("metrics", {}, metricsSchema, options);
  }

  async listDir(
    path: string,
    options: CallOptions & { maxEntries?: number } = {},
  ): Promise<{ entries: DirEntry[]; truncated: boolean }> {
    return this.#simple(
      "list_dir",
      { path, max_entries: options.maxEntries },
      listDirSchema,
      options,
    );
  }

  /** Stops all guest processes, syncs, unmounts and resets the guest: QEMU must run with
   * `-no-reboot` so that the reset makes it exit. */
  async shutdown(options: CallOptions = {}): Promise<void> {
    await this.#simple("shutdown", {}, okSchema, options);
  }

  /** Reads a regular file, at most `maxBytes` (default 64 MiB). */
  async readFile(
    path: string,
    options: CallOptions & { maxBytes?: number; offset?: number } = {},
  ): Promise<{ data: Buffer; size: number; truncated: boolean }> {
    const maxBytes = options.maxBytes ?? 64 * 1024 * 1024;
    const chunks: Buffer[] = [];
    let got = 0;
    const state = this.#open("read_file", true);
    state.onData = (kind, payload) => {
      if (kind !== FrameKind.STDOUT || got + payload.length > maxBytes) {
        this.#fatal(
          protocolError(
            `read_file sent ${kind === FrameKind.STDOUT ? "more data than asked" : `frame kind ${kind}`}`,
          ),
        );
        return;
      }
      got += payload.length;
      chunks.push(payload);
      this.#credit(state, payload.length);
    };
    this.#sendRequest(state, {
      op: "read_file",
      path,
      max_bytes: maxBytes,
      offset: options.offset,
    });
    const r = readFileResultSchema.safeParse(await this.#awaitResponse(state, options));
    if (!r.success || r.data.bytes !== got)
      throw this.#fatal(protocolError("bad read_file response"));
    return { data: Buffer.concat(chunks, got), size: r.data.size, truncated: r.data.truncated };
  }

  /** Writes a file atomically (temp file + rename) unless `append`. */
  async writeFile(
    path: string,
    data: Uint8Array | string | AsyncIterable<Uint8Array>,
    options: CallOptions & { mode?: number; mkdirs?: boolean; append?: boolean } = {},
  ): Promise<{ bytes: number }> {
    const state = this.#open("write_file", true);
    this.#sendRequest(state, {
      op: "write_file",
      path,
      mode: options.mode ?? 0o644,
      mkdirs: options.mkdirs ?? false,
      append: options.append ?? false,
    });
    const response = this.#awaitResponse(state, options);
    const send = async (): Promise<void> => {
      if (typeof data === "string" || data instanceof Uint8Array) {
        await this.#sendData(
          state,
          FrameKind.STDIN,
          typeof data === "string" ? Buffer.from(data) : data,
        );
      } else {
        for await (const chunk of data) await this.#sendData(state, FrameKind.STDIN, chunk);
      }
      await this.sendStreamEof(state);
    };
    const sending = send();
    // the response can come first (an error); the sender then stops at the closed stream
    const [r] = await Promise.all([response, sending.catch(() => undefined)]);
    return bytesSchema.parse(r);
  }

  /** Starts a process. Resolves once it runs (rejects if it could not be started). */
  async exec(params: ExecParams, options: ExecOptions = {}): Promise<ProcessHandle> {
    const state = this.#open("exec", false);
    const handle = new Process(this, state, options);
    this.#sendRequest(state, {
      op: "exec",
      argv: params.argv,
      env: params.env,
      cwd: params.cwd,
      stdin: params.stdin ?? false,
      timeout_ms: params.timeoutMs,
      rlimits: params.rlimits,
      pty: params.pty,
      ctrl: params.ctrl ?? false,
      uid: params.uid,
      gid: params.gid,
    });
    const r = pidSchema.safeParse(await this.#awaitResponse(state, options));
    if (!r.success) throw this.#fatal(protocolError("bad exec response"));
    handle.started(r.data.pid);
    if (options.signal) {
      const onAbort = (): void => void handle.kill().catch(() => undefined);
      if (options.signal.aborted) onAbort();
      else options.signal.addEventListener("abort", onAbort, { once: true });
      void handle.exit
        .finally(() => options.signal?.removeEventListener("abort", onAbort))
        .catch(() => undefined);
    }
    return handle;
  }

  /**
   * Takes over a process that kept running while the host was away: a stream listed in the
   * agent's HELLO `streams` after a reconnect (e.g. the warm REPL of a restored snapshot).
   * Output and control frames of that stream go to the returned handle from now on; frames
   * the guest queued before the reconnect are lost, and the windows restart (the agent
   * resets them when it sends HELLO).
   */
  adoptProcess(stream: number, options: ExecOptions & { pid?: number } = {}): ProcessHandle {
    if (this.#closed) throw this.#closed;
    if (!this.#hello?.streams.includes(stream)) {
      throw new MsbError(
        "INVALID_PARAMS",
        `Stream ${stream} is not a running process of the guest agent (not in its HELLO).`,
        { details: { stream } },
      );
    }
    if (this.#streams.has(stream)) {
      throw new MsbError("INVALID_PARAMS", `Stream ${stream} is already in use on this client.`, {
        details: { stream },
      });
    }
    const state: StreamState = {
      id: stream,
      op: "exec",
      response: deferred<unknown>(),
      responded: true,
      sendCredit: this.#windowBytes,
      // The agent reset both windows when it sent HELLO.
      recvCredit: this.#windowBytes,
      creditWaiters: [],
      endOnResponse: false,
      requestSent: deferred<void>(),
      fail: (err) => {
        state.response.reject(err);
        for (const w of state.creditWaiters.splice(0)) w();
      },
    };
    state.response.promise.catch(() => undefined);
    state.requestSent.resolve();
    this.#streams.set(stream, state);
    const handle = new Process(this, state, options);
    handle.started(options.pid ?? 0);
    return handle;
  }

  /** `exec` with a control channel on fd 3: how REPL drivers are started. */
  async startProcess(params: ExecParams, options: ExecOptions = {}): Promise<ProcessHandle> {
    return this.exec({ ...params, ctrl: true }, options);
  }

  /** Runs a process to completion, collecting up to `maxOutputBytes` (default 1 MiB) of output. */
  async run(
    params: ExecParams,
    options: CallOptions & {
      maxOutputBytes?: number;
      onOutput?: (chunk: OutputChunk) => void;
    } = {},
  ): Promise<RunResult> {
    const cap = options.maxOutputBytes ?? 1024 * 1024;
    const output: OutputChunk[] = [];
    let kept = 0;
    let truncated = false;
    const handle = await this.exec(params, {
      ...options,
      onOutput: (chunk) => {
        options.onOutput?.(chunk);
        const room = cap - kept;
        if (room <= 0) {
          truncated = true;
          return;
        }
        const data = chunk.data.length > room ? chunk.data.subarray(0, room) : chunk.data;
        if (data.length < chunk.data.length) truncated = true;
        kept += data.length;
        const last = output[output.length - 1];
        if (last && last.stream === chunk.stream)
          output[output.length - 1] = {
            stream: chunk.stream,
            data: Buffer.concat([last.data, data]),
          };
        else output.push({ stream: chunk.stream, data });
      },
    });
    const exit = await handle.exit;
    const pick = (s: "stdout" | "stderr"): Buffer =>
      Buffer.concat(output.filter((o) => o.stream === s).map((o) => o.data));
    return { exit, output, stdout: pick("stdout"), stderr: pick("stderr"), truncated };
  }

  /** Closes the connection; outstanding calls fail with AGENT_DISCONNECTED. */
  close(): void {
    this.#close(
      new MsbError(
        "AGENT_DISCONNECTED",
        "The connection to the guest agent was closed by the host.",
      ),
    );
    this.#io.destroy();
  }

  // ---- internals shared with Process

  /** @internal */
  async signalStream(
    id: number,
    signal: string | number,
    group: boolean,
    options: CallOptions,
  ): Promise<void> {
    await this.#simple("signal", { stream: id, signal, group }, okSchema, options);
  }

  /** @internal */
  async resizeStream(id: number, rows: number, cols: number, options: CallOptions): Promise<void> {
    await this.#simple("resize", { stream: id, rows, cols }, okSchema, options);
  }

  /** @internal */
  async sendStreamData(state: StreamState, kind: FrameKind, data: Uint8Array): Promise<void> {
    await this.#sendData(state, kind, data);
  }

  /** @internal */
  async sendStreamEof(state: StreamState): Promise<void> {
    await state.requestSent.promise;
    if (this.#streams.get(state.id) === state) this.#send(FrameKind.STDIN_EOF, state.id);
  }

  /** @internal Returns `n` bytes of credit to the guest for this stream. */
  credit(state: StreamState, n: number): void {
    this.#credit(state, n);
  }

  // ---- private

  #disconnected(cause?: unknown): MsbError {
    return new MsbError(
      "AGENT_DISCONNECTED",
      "The connection to the guest agent was lost (the VM stopped or crashed). Check the VM's console log.",
      cause === undefined ? {} : { cause },
    );
  }

  #open(op: string, endOnResponse: boolean): StreamState {
    if (this.#closed) throw this.#closed;
    let id = this.#nextId;
    while (id === 0 || this.#streams.has(id)) id = (id + 1) % 0x1_0000_0000;
    this.#nextId = (id + 1) % 0x1_0000_0000;
    const response = deferred<unknown>();
    response.promise.catch(() => undefined); // observed through #awaitResponse
    const state: StreamState = {
      id,
      op,
      response,
      responded: false,
      sendCredit: this.#windowBytes,
      recvCredit: this.#windowBytes,
      creditWaiters: [],
      endOnResponse,
      requestSent: deferred<void>(),
      fail: (err) => {
        response.reject(err);
        state.requestSent.resolve();
        for (const w of state.creditWaiters.splice(0)) w();
      },
    };
    this.#streams.set(id, state);
    return state;
  }

  #end(state: StreamState): void {
    if (this.#streams.get(state.id) === state) this.#streams.delete(state.id);
    for (const w of state.creditWaiters.splice(0)) w();
  }

  #sendRequest(state: StreamState, body: Record<string, unknown>): void {
    // Requests wait for HELLO (see the class comment); the call's deadline bounds the wait.
    const go = (): void => {
      if (this.#streams.get(state.id) !== state) return;
      try {
        this.#send(FrameKind.REQUEST, state.id, JSON.stringify(body));
        state.requestSent.resolve();
      } catch (err) {
        state.fail(err instanceof MsbError ? err : protocolError(String(err)));
        this.#end(state);
      }
    };
    if (this.#hello) go();
    else {
      const d = deferred<Hello>();
      this.#helloWaiters.push(d);
      d.promise.then(go, () => undefined);
    }
  }

  async #awaitResponse(state: StreamState, options: CallOptions): Promise<unknown> {
    return this.#withDeadline(state.response.promise, options, `${state.op} request`, () => {
      this.#end(state);
    });
  }

  async #simple<S extends z.ZodTypeAny>(
    op: string,
    params: Record<string, unknown>,
    schema: S,
    options: CallOptions,
  ): Promise<z.output<S>> {
    const state = this.#open(op, true);
    this.#sendRequest(state, { op, ...params });
    const raw = await this.#awaitResponse(state, options);
    const r = schema.safeParse(raw);
    if (!r.success)
      throw this.#fatal(
        protocolError(`malformed ${op} response`, { issues: r.error.issues.slice(0, 5) }),
      );
    return r.data as z.output<S>;
  }

  async #withDeadline<T>(
    promise: Promise<T>,
    options: CallOptions,
    what: string,
    onGiveUp: () => void,
  ): Promise<T> {
    const timeoutMs = options.timeoutMs ?? this.#timeoutMs;
    const signal = options.signal;
    if (signal?.aborted) {
      onGiveUp();
      throw new MsbError("CANCELLED", `${what} was cancelled.`);
    }
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const race = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        onGiveUp();
        reject(
          new MsbError(
            "AGENT_TIMEOUT",
            `The guest agent did not answer ${what} within ${timeoutMs} ms; the VM may be overloaded or hung.`,
            { details: { timeoutMs } },
          ),
        );
      }, timeoutMs);
      onAbort = () => {
        onGiveUp();
        reject(new MsbError("CANCELLED", `${what} was cancelled.`));
      };
      signal?.addEventListener("abort", onAbort, { once: true });
    });
    try {
      return await Promise.race([promise, race]);
    } finally {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener("abort", onAbort);
    }
  }

  async #sendData(state: StreamState, kind: FrameKind, data: Uint8Array): Promise<void> {
    await state.requestSent.promise;
    let off = 0;
    while (off < data.length) {
      if (this.#closed) throw this.#closed;
      if (this.#streams.get(state.id) !== state) {
        throw new MsbError(
          "INVALID_PARAMS",
          `${state.op}: the stream has ended; no more input is accepted.`,
        );
      }
      if (state.sendCredit <= 0) {
        await new Promise<void>((resolve) => state.creditWaiters.push(resolve));
        continue;
      }
      const n = Math.min(data.length - off, state.sendCredit, CHUNK_BYTES, this.#maxFrameBytes - 5);
      state.sendCredit -= n;
      const ok = this.#io.write(encodeFrame(kind, state.id, data.subarray(off, off + n)));
      off += n;
      if (!ok) await new Promise<void>((resolve) => this.#io.once("drain", resolve));
    }
  }

  #credit(state: StreamState, n: number): void {
    if (n <= 0 || this.#closed || this.#streams.get(state.id) !== state) return;
    state.recvCredit += n;
    const p = Buffer.allocUnsafe(4);
    p.writeUInt32BE(n, 0);
    this.#send(FrameKind.WINDOW, state.id, p);
  }

  #send(kind: FrameKind, stream: number, payload?: Uint8Array | string): void {
    if (this.#closed) throw this.#closed;
    this.#io.write(encodeFrame(kind, stream, payload, this.#maxFrameBytes));
  }

  #setHello(hello: Hello): void {
    if (hello.protocol !== PROTOCOL_VERSION) {
      this.#fatal(
        protocolError(
          `agent speaks protocol ${hello.protocol}, this host speaks ${PROTOCOL_VERSION}; rebuild the initramfs`,
          { protocol: hello.protocol },
        ),
      );
      return;
    }
    this.#hello = hello;
    this.#windowBytes = Math.min(hello.windowBytes, 64 * 1024 * 1024);
    this.#maxFrameBytes = Math.min(hello.maxFrameBytes, MAX_FRAME_BYTES);
    for (const w of this.#helloWaiters.splice(0)) w.resolve(hello);
  }

  #onData(chunk: Buffer): void {
    if (this.#closed) return;
    let frames: Frame[];
    try {
      frames = this.#decoder.push(chunk);
    } catch (err) {
      this.#fatal(err instanceof MsbError ? err : protocolError(String(err)));
      return;
    }
    for (const f of frames) {
      if (this.#closed) return;
      try {
        this.#onFrame(f);
      } catch (err) {
        // #json and friends already reset the connection; anything else is a fault of ours
        if (!(err instanceof MsbError))
          this.#fatal(protocolError(`host fault while handling a frame: ${String(err)}`));
      }
    }
  }

  #json(frame: Frame): unknown {
    try {
      return JSON.parse(frame.payload.toString("utf8")) as unknown;
    } catch {
      throw this.#fatal(
        protocolError(`frame kind ${frame.kind} on stream ${frame.stream} is not JSON`),
      );
    }
  }

  #onFrame(f: Frame): void {
    switch (f.kind) {
      case FrameKind.HELLO: {
        const h = helloSchema.safeParse(this.#json(f));
        if (!h.success) {
          this.#fatal(protocolError("malformed HELLO"));
          return;
        }
        this.#setHello(h.data);
        return;
      }
      case FrameKind.ERROR: {
        const e = agentErrorSchema.safeParse(this.#json(f));
        const code = e.success ? e.data.error.code : "bad_error_frame";
        const message = e.success ? e.data.error.message : "malformed ERROR frame";
        if (f.stream === 0 || !e.success) {
          this.#fatal(protocolError(`agent reported ${code}: ${message}`, { agentCode: code }));
          return;
        }
        const state = this.#streams.get(f.stream);
        if (state && !state.responded) {
          state.fail(agentError(state.op, code, message));
          this.#end(state);
        } else {
          this.#warn(`agent error on stream ${f.stream}: ${code}: ${message}`);
        }
        return;
      }
      case FrameKind.RESPONSE: {
        const state = this.#streams.get(f.stream);
        if (!state) return; // answer to a call that gave up (deadline, cancel)
        if (state.responded) {
          this.#fatal(protocolError(`second RESPONSE on stream ${f.stream}`));
          return;
        }
        const body = this.#json(f);
        state.responded = true;
        const e = agentErrorSchema.safeParse(body);
        if (e.success) {
          state.fail(agentError(state.op, e.data.error.code, e.data.error.message));
          this.#end(state);
          return;
        }
        state.response.resolve(body);
        if (state.endOnResponse) this.#end(state);
        return;
      }
      case FrameKind.STDOUT:
      case FrameKind.STDERR:
      case FrameKind.CTRL_OUT: {
        const state = this.#streams.get(f.stream);
        if (!state) return;
        if (!state.onData) {
          this.#fatal(protocolError(`unexpected data on stream ${f.stream} (${state.op})`));
          return;
        }
        if (f.payload.length > state.recvCredit) {
          this.#fatal(
            protocolError(
              `${f.payload.length} bytes of output on stream ${f.stream} with ${state.recvCredit} bytes of flow-control window left`,
              { stream: f.stream, windowLeft: state.recvCredit },
            ),
          );
          return;
        }
        state.recvCredit -= f.payload.length;
        state.onData(f.kind, f.payload);
        return;
      }
      case FrameKind.EXIT: {
        const state = this.#streams.get(f.stream);
        if (!state) return;
        const e = exitSchema.safeParse(this.#json(f));
        if (!e.success || !state.onExit || !state.responded) {
          this.#fatal(protocolError(`bad EXIT on stream ${f.stream}`));
          return;
        }
        this.#end(state);
        state.onExit(e.data);
        return;
      }
      case FrameKind.WINDOW: {
        const state = this.#streams.get(f.stream);
        if (f.payload.length !== 4) {
          this.#fatal(protocolError("WINDOW frame without a u32 payload"));
          return;
        }
        if (!state) return;
        state.sendCredit = Math.min(state.sendCredit + f.payload.readUInt32BE(0), 64 * 1024 * 1024);
        for (const w of state.creditWaiters.splice(0)) w();
        return;
      }
      case FrameKind.REQUEST:
      case FrameKind.STDIN:
      case FrameKind.STDIN_EOF:
      case FrameKind.CTRL_IN:
        this.#fatal(protocolError(`frame kind ${f.kind} from the guest`));
        return;
    }
  }

  /** Fails everything and drops the connection. Returns the error for `throw`. */
  #fatal(err: MsbError): MsbError {
    this.#close(err);
    this.#io.destroy();
    return err;
  }

  #close(err: MsbError): void {
    if (this.#closed) return;
    this.#closed = err;
    for (const state of [...this.#streams.values()]) {
      this.#streams.delete(state.id);
      state.fail(err);
    }
    for (const w of this.#helloWaiters.splice(0)) w.reject(err);
    for (const l of this.#closeListeners.splice(0)) l(err);
  }
}

/** A process started by `exec` (see ProcessHandle). */
class Process implements ProcessHandle {
  readonly #client: AgentClient;
  readonly #state: StreamState;
  readonly #onOutput: ((chunk: OutputChunk) => void) | undefined;
  readonly #highWater: number;
  readonly #exit = deferred<ExitStatus>();
  #pid = 0;
  #queue: OutputChunk[] = [];
  #queuedBytes = 0;
  #heldCredit = 0;
  #waiter: (() => void) | undefined;
  #done = false;
  #failure: MsbError | undefined;

  constructor(client: AgentClient, state: StreamState, options: ExecOptions) {
    this.#client = client;
    this.#state = state;
    this.#onOutput = options.onOutput;
    this.#highWater = options.highWaterMarkBytes ?? 1024 * 1024;
    this.#exit.promise.catch(() => undefined);
    const onCtrl = options.onCtrl;
    state.onData = (kind, payload) => {
      if (kind === FrameKind.CTRL_OUT) {
        onCtrl?.(payload);
        client.credit(state, payload.length);
        return;
      }
      const chunk: OutputChunk = {
        stream: kind === FrameKind.STDERR ? "stderr" : "stdout",
        data: payload,
      };
      if (this.#onOutput) {
        this.#onOutput(chunk);
        client.credit(state, payload.length);
        return;
      }
      this.#queue.push(chunk);
      this.#queuedBytes += payload.length;
      if (this.#queuedBytes <= this.#highWater) client.credit(state, payload.length);
      else this.#heldCredit += payload.length;
      this.#wake();
    };
    state.onExit = (exit) => {
      this.#done = true;
      this.#exit.resolve(exit);
      this.#wake();
    };
    const fail = state.fail.bind(state);
    state.fail = (err) => {
      fail(err);
      this.#done = true;
      this.#failure = err;
      this.#exit.reject(err);
      this.#wake();
    };
  }

  get stream(): number {
    return this.#state.id;
  }
  get pid(): number {
    return this.#pid;
  }
  get exit(): Promise<ExitStatus> {
    return this.#exit.promise;
  }

  /** @internal */
  started(pid: number): void {
    this.#pid = pid;
  }

  #wake(): void {
    const w = this.#waiter;
    this.#waiter = undefined;
    w?.();
  }

  async *output(): AsyncIterableIterator<OutputChunk> {
    if (this.#onOutput)
      throw new MsbError("INVALID_PARAMS", "output() is not available when onOutput is set.");
    for (;;) {
      const chunk = this.#queue.shift();
      if (chunk) {
        this.#queuedBytes -= chunk.data.length;
        if (this.#heldCredit > 0 && this.#queuedBytes <= this.#highWater) {
          // reset before sending: the credit can bring more output in synchronously
          const n = this.#heldCredit;
          this.#heldCredit = 0;
          this.#client.credit(this.#state, n);
        }
        yield chunk;
        continue;
      }
      if (this.#done) {
        if (this.#failure !== undefined) throw this.#failure;
        return;
      }
      await new Promise<void>((resolve) => (this.#waiter = resolve));
    }
  }

  async writeStdin(data: Uint8Array | string): Promise<void> {
    await this.#client.sendStreamData(
      this.#state,
      FrameKind.STDIN,
      typeof data === "string" ? Buffer.from(data) : data,
    );
  }

  async closeStdin(): Promise<void> {
    await this.#client.sendStreamEof(this.#state);
  }

  async writeCtrl(data: Uint8Array | string): Promise<void> {
    await this.#client.sendStreamData(
      this.#state,
      FrameKind.CTRL_IN,
      typeof data === "string" ? Buffer.from(data) : data,
    );
  }

  async signal(
    signal: string | number,
    options: CallOptions & { group?: boolean } = {},
  ): Promise<void> {
    await this.#client.signalStream(this.#state.id, signal, options.group ?? true, options);
  }

  async resize(rows: number, cols: number, options: CallOptions = {}): Promise<void> {
    await this.#client.resizeStream(this.#state.id, rows, cols, options);
  }

  async kill(options: CallOptions = {}): Promise<void> {
    await this.signal("SIGKILL", options);
  }
}

/** Creates a client over a connected byte stream (see AgentClient). */
export function createAgentClient(io: Duplex, options: AgentClientOptions = {}): AgentClient {
  return new AgentClient(io, options);
}
