import type { Duplex } from "node:stream";
import type { MsbError } from "@msb/errors";
import { AgentConnection } from "./connection.js";
import { FrameKind, protocolError } from "./frame.js";
import {
  bytesSchema,
  configureResultSchema,
  listDirSchema,
  metricsSchema,
  okSchema,
  pidSchema,
  pongSchema,
  readFileResultSchema,
  type DirEntry,
  type Hello,
  type Metrics,
} from "./messages.js";
import { Process } from "./process.js";
import type {
  AgentClientOptions,
  CallOptions,
  ConfigureParams,
  ExecOptions,
  ExecParams,
  OutputChunk,
  ProcessHandle,
  RunResult,
} from "./types.js";

/**
 * Client of the guest agent: its operations (files, processes, identity, metrics) over one
 * AgentConnection, which multiplexes requests on stream ids, flow-controls output per stream,
 * holds requests until the agent's HELLO and fails every outstanding call with
 * AGENT_DISCONNECTED when the connection drops. Every call has a deadline.
 */
export class AgentClient {
  readonly #conn: AgentConnection;

  constructor(io: Duplex, options: AgentClientOptions = {}) {
    this.#conn = new AgentConnection(io, options);
  }

  /** The latest HELLO, if one arrived. */
  get hello(): Hello | undefined {
    return this.#conn.hello;
  }

  /** Set once the connection is gone, with the reason. */
  get closedReason(): MsbError | undefined {
    return this.#conn.closedReason;
  }

  /** Calls `listener` once when the connection closes (at once if it already has). */
  onClose(listener: (err: MsbError) => void): void {
    this.#conn.onClose(listener);
  }

  /** Waits for the agent's HELLO (boot errors are in it: check `ready`). */
  async waitHello(options: CallOptions = {}): Promise<Hello> {
    return this.#conn.waitHello(options);
  }

  async ping(options: CallOptions = {}): Promise<{ uptimeMs: number }> {
    const r = await this.#conn.call("ping", {}, pongSchema, options);
    return { uptimeMs: r.uptime_ms };
  }

  /** Asks the agent for its HELLO again (e.g. after re-adopting a running VM). */
  async requestHello(options: CallOptions = {}): Promise<Hello> {
    return this.#conn.requestHello(options);
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
    return this.#conn.call("configure", wire, configureResultSchema, options);
  }

  async metrics(options: CallOptions = {}): Promise<Metrics> {
    return this.#conn.call("metrics", {}, metricsSchema, options);
  }

  async listDir(
    path: string,
    options: CallOptions & { maxEntries?: number } = {},
  ): Promise<{ entries: DirEntry[]; truncated: boolean }> {
    return this.#conn.call(
      "list_dir",
      { path, max_entries: options.maxEntries },
      listDirSchema,
      options,
    );
  }

  /** Stops all guest processes, syncs, unmounts and resets the guest: QEMU must run with
   * `-no-reboot` so that the reset makes it exit. */
  async shutdown(options: CallOptions = {}): Promise<void> {
    await this.#conn.call("shutdown", {}, okSchema, options);
  }

  /** Reads a regular file, at most `maxBytes` (default 64 MiB). */
  async readFile(
    path: string,
    options: CallOptions & { maxBytes?: number; offset?: number } = {},
  ): Promise<{ data: Buffer; size: number; truncated: boolean }> {
    const maxBytes = options.maxBytes ?? 64 * 1024 * 1024;
    const chunks: Buffer[] = [];
    let got = 0;
    const stream = this.#conn.open("read_file", true);
    stream.onData = (kind, payload) => {
      if (kind !== FrameKind.STDOUT || got + payload.length > maxBytes) {
        this.#conn.fatal(
          protocolError(
            `read_file sent ${kind === FrameKind.STDOUT ? "more data than asked" : `frame kind ${kind}`}`,
          ),
        );
        return;
      }
      got += payload.length;
      chunks.push(payload);
      stream.credit(payload.length);
    };
    stream.request({
      op: "read_file",
      path,
      max_bytes: maxBytes,
      offset: options.offset,
    });
    const r = readFileResultSchema.safeParse(await stream.response(options));
    if (!r.success || r.data.bytes !== got)
      throw this.#conn.fatal(protocolError("bad read_file response"));
    return { data: Buffer.concat(chunks, got), size: r.data.size, truncated: r.data.truncated };
  }

  /** Writes a file atomically (temp file + rename) unless `append`. */
  async writeFile(
    path: string,
    data: Uint8Array | string | AsyncIterable<Uint8Array>,
    options: CallOptions & { mode?: number; mkdirs?: boolean; append?: boolean } = {},
  ): Promise<{ bytes: number }> {
    const stream = this.#conn.open("write_file", true);
    stream.request({
      op: "write_file",
      path,
      mode: options.mode ?? 0o644,
      mkdirs: options.mkdirs ?? false,
      append: options.append ?? false,
    });
    const response = stream.response(options);
    const send = async (): Promise<void> => {
      if (typeof data === "string" || data instanceof Uint8Array) {
        await stream.send(FrameKind.STDIN, typeof data === "string" ? Buffer.from(data) : data);
      } else {
        for await (const chunk of data) await stream.send(FrameKind.STDIN, chunk);
      }
      await stream.sendEof();
    };
    const sending = send();
    // the response can come first (an error); the sender then stops at the closed stream
    const [r] = await Promise.all([response, sending.catch(() => undefined)]);
    return bytesSchema.parse(r);
  }

  /** Starts a process. Resolves once it runs (rejects if it could not be started). */
  async exec(params: ExecParams, options: ExecOptions = {}): Promise<ProcessHandle> {
    const stream = this.#conn.open("exec", false);
    const handle = new Process(this.#conn, stream, options);
    stream.request({
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
    const r = pidSchema.safeParse(await stream.response(options));
    if (!r.success) throw this.#conn.fatal(protocolError("bad exec response"));
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
    const handle = new Process(this.#conn, this.#conn.adopt(stream), options);
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
    this.#conn.close();
  }
}

/** Creates a client over a connected byte stream (see AgentClient). */
export function createAgentClient(io: Duplex, options: AgentClientOptions = {}): AgentClient {
  return new AgentClient(io, options);
}
