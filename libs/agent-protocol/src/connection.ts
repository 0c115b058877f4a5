import type { Duplex } from "node:stream";
import { MsbError } from "@msb/errors";
import type { z } from "zod";
import { deferred, withDeadline, type Deferred } from "./deadline.js";
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
  agentError,
  agentErrorSchema,
  exitSchema,
  helloSchema,
  type ExitStatus,
  type Hello,
} from "./messages.js";
import type { AgentClientOptions, CallOptions } from "./types.js";

const CHUNK_BYTES = 65_536;

/**
 * One request stream (one stream id) as operations and processes see it: the connection owns
 * the ids, the windows and the frame routing; the user of a stream sends its request, reads
 * its response and data, and returns receive credit as it consumes output.
 */
export interface Stream {
  readonly id: number;
  readonly op: string;
  /** STDOUT/STDERR/CTRL_OUT of the guest, each frame already counted against the window. */
  onData: ((kind: FrameKind, payload: Buffer) => void) | undefined;
  /** The EXIT frame (exec streams); the stream has ended when it is called. */
  onExit: ((exit: ExitStatus) => void) | undefined;
  /** Told after the stream failed: agent error, lost connection (not a caller's deadline). */
  onFail: ((err: MsbError) => void) | undefined;
  /** Sends the REQUEST frame; it waits for the agent's HELLO (see AgentConnection). */
  request(body: Record<string, unknown>): void;
  /** The RESPONSE payload (an `error` answer rejects), within the call's deadline; on giving
   * up the stream is forgotten and a late answer dropped. */
  response(options: CallOptions): Promise<unknown>;
  /** Sends STDIN or CTRL_IN bytes within the guest's window, waiting for WINDOW credit. */
  send(kind: FrameKind, data: Uint8Array): Promise<void>;
  /** Sends STDIN_EOF once the request is out (nothing if the stream has ended). */
  sendEof(): Promise<void>;
  /** Returns `n` bytes of receive window to the guest. */
  credit(n: number): void;
}

/** What the connection keeps per stream besides what its user sees. */
interface StreamState extends Stream {
  readonly answer: Deferred<unknown>;
  responded: boolean;
  /** Host → guest credit for STDIN/CTRL_IN. */
  sendCredit: number;
  /** Guest → host credit for STDOUT/STDERR/CTRL_OUT: what the guest may still send. A guest
   * that sends more is hostile or broken, and host memory would no longer be bounded. */
  recvCredit: number;
  creditWaiters: Array<() => void>;
  /** Ends the stream when the RESPONSE arrives (all ops but exec). */
  readonly endOnResponse: boolean;
  /** Resolves once the REQUEST is written: data frames may only follow it. */
  readonly requestSent: Deferred<void>;
  fail(err: MsbError): void;
}

/**
 * The multiplexed connection to the guest agent over any byte stream (a unix socket to QEMU's
 * virtio-serial chardev today; vsock later): HELLO, stream ids, per-stream flow control,
 * deadlines, and the routing of guest frames. When the connection drops every outstanding
 * stream fails with AGENT_DISCONNECTED; a guest that breaks the protocol is disconnected.
 *
 * Nothing is sent before the agent's HELLO: bytes written before the guest opens its port
 * are discarded by the guest kernel, possibly in the middle of a frame.
 */
export class AgentConnection {
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

  /** Asks the agent for its HELLO again and takes it as the current one. */
  async requestHello(options: CallOptions = {}): Promise<Hello> {
    const hello = await this.call("hello", {}, helloSchema, options);
    this.#setHello(hello);
    return hello;
  }

  /** Opens a stream for `op` with a fresh id; `endOnResponse` for all ops but exec. */
  open(op: string, endOnResponse: boolean): Stream {
    if (this.#closed) throw this.#closed;
    let id = this.#nextId;
    while (id === 0 || this.#streams.has(id)) id = (id + 1) % 0x1_0000_0000;
    this.#nextId = (id + 1) % 0x1_0000_0000;
    const state = this.#state(id, op, endOnResponse);
    this.#streams.set(id, state);
    return state;
  }

  /**
   * Takes over the stream of a process that kept running while the host was away (listed in
   * HELLO `streams`): already answered, both windows fresh (the agent resets them with HELLO).
   */
  adopt(stream: number): Stream {
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
    const state = this.#state(stream, "exec", false);
    state.responded = true;
    state.requestSent.resolve();
    this.#streams.set(stream, state);
    return state;
  }

  /** One request, one JSON response checked against `schema` (a malformed one is fatal). */
  async call<S extends z.ZodTypeAny>(
    op: string,
    params: Record<string, unknown>,
    schema: S,
    options: CallOptions,
  ): Promise<z.output<S>> {
    const state = this.open(op, true);
    state.request({ op, ...params });
    const raw = await state.response(options);
    const r = schema.safeParse(raw);
    if (!r.success)
      throw this.fatal(
        protocolError(`malformed ${op} response`, { issues: r.error.issues.slice(0, 5) }),
      );
    return r.data as z.output<S>;
  }

  /** Fails everything and drops the connection. Returns the error for `throw`. */
  fatal(err: MsbError): MsbError {
    this.#close(err);
    this.#io.destroy();
    return err;
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

  // ---- private

  #disconnected(cause?: unknown): MsbError {
    return new MsbError(
      "AGENT_DISCONNECTED",
      "The connection to the guest agent was lost (the VM stopped or crashed). Check the VM's console log.",
      cause === undefined ? {} : { cause },
    );
  }

  #state(id: number, op: string, endOnResponse: boolean): StreamState {
    const answer = deferred<unknown>();
    answer.promise.catch(() => undefined); // observed through response()
    const state: StreamState = {
      id,
      op,
      answer,
      responded: false,
      sendCredit: this.#windowBytes,
      recvCredit: this.#windowBytes,
      creditWaiters: [],
      endOnResponse,
      requestSent: deferred<void>(),
      onData: undefined,
      onExit: undefined,
      onFail: undefined,
      fail: (err) => {
        answer.reject(err);
        state.requestSent.resolve();
        for (const w of state.creditWaiters.splice(0)) w();
        state.onFail?.(err);
      },
      request: (body) => this.#sendRequest(state, body),
      response: (options) =>
        this.#withDeadline(answer.promise, options, `${op} request`, () => this.#end(state)),
      send: (kind, data) => this.#sendData(state, kind, data),
      sendEof: async () => {
        await state.requestSent.promise;
        if (this.#streams.get(id) === state) this.#send(FrameKind.STDIN_EOF, id);
      },
      credit: (n) => this.#credit(state, n),
    };
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

  async #withDeadline<T>(
    promise: Promise<T>,
    options: CallOptions,
    what: string,
    onGiveUp: () => void,
  ): Promise<T> {
    return withDeadline(promise, options, this.#timeoutMs, what, onGiveUp);
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
      this.fatal(
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
      this.fatal(err instanceof MsbError ? err : protocolError(String(err)));
      return;
    }
    for (const f of frames) {
      if (this.#closed) return;
      try {
        this.#onFrame(f);
      } catch (err) {
        // #json and friends already reset the connection; anything else is a fault of ours
        if (!(err instanceof MsbError))
          this.fatal(protocolError(`host fault while handling a frame: ${String(err)}`));
      }
    }
  }

  #json(frame: Frame): unknown {
    try {
      return JSON.parse(frame.payload.toString("utf8")) as unknown;
    } catch {
      throw this.fatal(
        protocolError(`frame kind ${frame.kind} on stream ${frame.stream} is not JSON`),
      );
    }
  }

  #onFrame(f: Frame): void {
    switch (f.kind) {
      case FrameKind.HELLO: {
        const h = helloSchema.safeParse(this.#json(f));
        if (!h.success) {
          this.fatal(protocolError("malformed HELLO"));
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
          this.fatal(protocolError(`agent reported ${code}: ${message}`, { agentCode: code }));
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
          this.fatal(protocolError(`second RESPONSE on stream ${f.stream}`));
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
        state.answer.resolve(body);
        if (state.endOnResponse) this.#end(state);
        return;
      }
      case FrameKind.STDOUT:
      case FrameKind.STDERR:
      case FrameKind.CTRL_OUT: {
        const state = this.#streams.get(f.stream);
        if (!state) return;
        if (!state.onData) {
          this.fatal(protocolError(`unexpected data on stream ${f.stream} (${state.op})`));
          return;
        }
        if (f.payload.length > state.recvCredit) {
          this.fatal(
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
          this.fatal(protocolError(`bad EXIT on stream ${f.stream}`));
          return;
        }
        this.#end(state);
        state.onExit(e.data);
        return;
      }
      case FrameKind.WINDOW: {
        const state = this.#streams.get(f.stream);
        if (f.payload.length !== 4) {
          this.fatal(protocolError("WINDOW frame without a u32 payload"));
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
        this.fatal(protocolError(`frame kind ${f.kind} from the guest`));
        return;
    }
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
