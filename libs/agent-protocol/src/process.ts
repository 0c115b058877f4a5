import { MsbError } from "@msb/errors";
import type { AgentConnection, Stream } from "./connection.js";
import { deferred } from "./deadline.js";
import { FrameKind } from "./frame.js";
import { okSchema, type ExitStatus } from "./messages.js";
import type { CallOptions, ExecOptions, OutputChunk, ProcessHandle } from "./types.js";

/**
 * A process in the guest on one exec stream (see ProcessHandle). It takes the stream's output:
 * handed to `onOutput` (credit returned at once) or queued for `output()`, where credit is held
 * back past the high-water mark so that a slow reader pauses the process instead of filling
 * host memory. Signals and resizes are requests of their own on the connection.
 */
export class Process implements ProcessHandle {
  readonly #connection: AgentConnection;
  readonly #stream: Stream;
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

  constructor(connection: AgentConnection, stream: Stream, options: ExecOptions) {
    this.#connection = connection;
    this.#stream = stream;
    this.#onOutput = options.onOutput;
    this.#highWater = options.highWaterMarkBytes ?? 1024 * 1024;
    this.#exit.promise.catch(() => undefined);
    const onCtrl = options.onCtrl;
    stream.onData = (kind, payload) => {
      if (kind === FrameKind.CTRL_OUT) {
        onCtrl?.(payload);
        stream.credit(payload.length);
        return;
      }
      const chunk: OutputChunk = {
        stream: kind === FrameKind.STDERR ? "stderr" : "stdout",
        data: payload,
      };
      if (this.#onOutput) {
        this.#onOutput(chunk);
        stream.credit(payload.length);
        return;
      }
      this.#queue.push(chunk);
      this.#queuedBytes += payload.length;
      if (this.#queuedBytes <= this.#highWater) stream.credit(payload.length);
      else this.#heldCredit += payload.length;
      this.#wake();
    };
    stream.onExit = (exit) => {
      this.#done = true;
      this.#exit.resolve(exit);
      this.#wake();
    };
    stream.onFail = (err) => {
      this.#done = true;
      this.#failure = err;
      this.#exit.reject(err);
      this.#wake();
    };
  }

  get stream(): number {
    return this.#stream.id;
  }
  get pid(): number {
    return this.#pid;
  }
  get exit(): Promise<ExitStatus> {
    return this.#exit.promise;
  }

  /** Records the pid once the agent has answered the exec (0 for an adopted process). */
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
          this.#stream.credit(n);
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
    await this.#stream.send(FrameKind.STDIN, typeof data === "string" ? Buffer.from(data) : data);
  }

  async closeStdin(): Promise<void> {
    await this.#stream.sendEof();
  }

  async writeCtrl(data: Uint8Array | string): Promise<void> {
    await this.#stream.send(FrameKind.CTRL_IN, typeof data === "string" ? Buffer.from(data) : data);
  }

  async signal(
    signal: string | number,
    options: CallOptions & { group?: boolean } = {},
  ): Promise<void> {
    const params = { stream: this.#stream.id, signal, group: options.group ?? true };
    await this.#connection.call("signal", params, okSchema, options);
  }

  async resize(rows: number, cols: number, options: CallOptions = {}): Promise<void> {
    const params = { stream: this.#stream.id, rows, cols };
    await this.#connection.call("resize", params, okSchema, options);
  }

  async kill(options: CallOptions = {}): Promise<void> {
    await this.signal("SIGKILL", options);
  }
}
