import {
  MicrosandboxError,
  ProtocolError,
  ServerNotRunningError,
  TimeoutError,
  errorFromRpc,
} from "./errors.js";
import { SDK_VERSION } from "./version.js";

/** Where JSON-RPC lives on every msb server (SPEC.md). */
export const RPC_PATH = "/api/v1/rpc";

/** Receives one chunk of output; may return a promise, which is awaited before the next. */
export type OutputCallback = (stream: string, text: string) => void | Promise<void>;

export interface CallOptions {
  /** Client-side bound on the whole call in milliseconds; `undefined` waits as long as it takes. */
  readonly timeoutMs?: number | undefined;
  /** Cancels the call (the connection is closed; the server stops the work it can). */
  readonly signal?: AbortSignal | undefined;
}

export interface RpcClientOptions {
  readonly serverUrl: string;
  readonly apiKey?: string | undefined;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

const UNREACHABLE_CODES = new Set([
  "ECONNREFUSED",
  "ENOTFOUND",
  "EAI_AGAIN",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ECONNRESET",
  "EPIPE",
  "UND_ERR_CONNECT_TIMEOUT",
  "UND_ERR_SOCKET",
  "UND_ERR_CLOSED",
]);

/** The system error code behind a failed `fetch` (`TypeError: fetch failed`), if any. */
function networkCode(err: unknown): string | undefined {
  let cause: unknown = err;
  for (let depth = 0; depth < 4 && isRecord(cause); depth++) {
    if (typeof cause["code"] === "string" && UNREACHABLE_CODES.has(cause["code"])) {
      return cause["code"];
    }
    const nested = cause["errors"];
    if (Array.isArray(nested)) {
      for (const e of nested) {
        if (isRecord(e) && typeof e["code"] === "string" && UNREACHABLE_CODES.has(e["code"])) {
          return e["code"];
        }
      }
    }
    cause = cause["cause"];
  }
  return undefined;
}

/**
 * JSON-RPC 2.0 over `POST /api/v1/rpc` with Node's built-in `fetch` (keep-alive by default),
 * plus the optional server-sent-events answer proposed in docs/streaming.md.
 */
export class RpcClient {
  readonly serverUrl: string;
  readonly #apiKey: string | undefined;

  constructor(options: RpcClientOptions) {
    let url: URL;
    try {
      url = new URL(options.serverUrl);
    } catch {
      url = new URL("invalid:");
    }
    if (url.protocol !== "http:" && url.protocol !== "https:") {
      throw new MicrosandboxError(
        `serverUrl must look like http://host:port, got ${JSON.stringify(options.serverUrl)}`,
        "INVALID_PARAMS",
      );
    }
    this.serverUrl = options.serverUrl.replace(/\/+$/, "");
    this.#apiKey = options.apiKey;
  }

  /** Calls `method` and resolves to its `result`; rejects with the typed error otherwise. */
  async call(method: string, params: Record<string, unknown>, options: CallOptions = {}) {
    const response = await this.#post(method, params, options, false);
    return this.#jsonResult(method, response, options);
  }

  /**
   * Like `call`, delivering output events to `onOutput` as they arrive. `streamed` is false when
   * the server answered plain JSON (no streaming support): nothing was delivered then.
   */
  async callStreaming(
    method: string,
    params: Record<string, unknown>,
    onOutput: OutputCallback,
    options: CallOptions = {},
  ): Promise<{ result: unknown; streamed: boolean }> {
    const response = await this.#post(method, params, options, true);
    const type = (response.headers.get("content-type") ?? "").split(";")[0]?.trim().toLowerCase();
    if (type !== "text/event-stream") {
      return { result: await this.#jsonResult(method, response, options), streamed: false };
    }
    return { result: await this.#sseResult(method, response, onOutput, options), streamed: true };
  }

  async #post(
    method: string,
    params: Record<string, unknown>,
    options: CallOptions,
    stream: boolean,
  ): Promise<Response> {
    const headers: Record<string, string> = {
      "Content-Type": "application/json",
      Accept: stream ? "text/event-stream, application/json" : "application/json",
      "User-Agent": `microsandbox-js/${SDK_VERSION}`,
    };
    if (this.#apiKey !== undefined && this.#apiKey !== "") {
      headers["Authorization"] = `Bearer ${this.#apiKey}`;
    }
    const body = JSON.stringify({ jsonrpc: "2.0", method, params, id: crypto.randomUUID() });
    try {
      return await fetch(`${this.serverUrl}${RPC_PATH}`, {
        method: "POST",
        headers,
        body,
        signal: signalFor(options),
      });
    } catch (err) {
      throw this.#translate(method, err, options, "connect");
    }
  }

  async #jsonResult(method: string, response: Response, options: CallOptions): Promise<unknown> {
    let text: string;
    try {
      text = await response.text();
    } catch (err) {
      throw this.#translate(method, err, options, "read");
    }
    return this.#unwrap(response.status, text);
  }

  #unwrap(status: number, text: string): unknown {
    let message: unknown;
    try {
      message = JSON.parse(text);
    } catch {
      message = undefined;
    }
    if (isRecord(message) && message["jsonrpc"] === "2.0") {
      if (message["error"] !== undefined && message["error"] !== null) {
        throw errorFromRpc(message["error"]);
      }
      if ("result" in message) return message["result"];
    }
    throw new ProtocolError(
      `${this.serverUrl}${RPC_PATH} answered HTTP ${status} with something that is not a JSON-RPC response: ${JSON.stringify(text.slice(0, 200))}. Is serverUrl / MSB_SERVER_URL an msb server?`,
      "PROTOCOL_ERROR",
    );
  }

  async #sseResult(
    method: string,
    response: Response,
    onOutput: OutputCallback,
    options: CallOptions,
  ): Promise<unknown> {
    const body = response.body;
    if (body === null) throw this.#lost(new Error("empty body"));
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    let event = "message";
    let data: string[] = [];
    try {
      for (;;) {
        const chunk = await reader.read().catch((err: unknown) => {
          throw this.#translate(method, err, options, "read");
        });
        if (chunk.done) break;
        buffer += chunk.value;
        // SSE lines end in \n, \r\n or \r; a partial last line waits for the next chunk.
        const lines = buffer.replace(/\r\n?/g, "\n").split("\n");
        buffer = lines.pop() ?? "";
        for (const line of lines) {
          if (line === "") {
            if (data.length > 0) {
              const payload = data.join("\n");
              if (event === "result") return this.#unwrap(200, payload);
              if (event === "output") await deliver(onOutput, payload);
            }
            event = "message";
            data = [];
          } else if (!line.startsWith(":")) {
            const colon = line.indexOf(":");
            const field = colon === -1 ? line : line.slice(0, colon);
            let value = colon === -1 ? "" : line.slice(colon + 1);
            if (value.startsWith(" ")) value = value.slice(1);
            if (field === "event") event = value;
            else if (field === "data") data.push(value);
          }
        }
      }
    } finally {
      // The stream is not read past the result; cancelling releases the connection.
      reader.cancel().catch(() => undefined);
    }
    throw new ServerNotRunningError(
      `the event stream from ${this.serverUrl} ended without a result; the server may have stopped (\`msb server status\`).`,
      "SERVER_NOT_RUNNING",
    );
  }

  #translate(method: string, err: unknown, options: CallOptions, phase: "connect" | "read") {
    if (err instanceof MicrosandboxError) return err;
    const name = isRecord(err) ? err["name"] : undefined;
    if (name === "TimeoutError" && !(options.signal?.aborted ?? false)) {
      const seconds = (options.timeoutMs ?? 0) / 1000;
      return new TimeoutError(
        `${method}: no answer from ${this.serverUrl} within ${seconds}s; retry with a longer timeout`,
        "TIMEOUT",
        { cause: err },
      );
    }
    if (options.signal?.aborted ?? false) {
      // The caller cancelled: hand back their reason untouched.
      return (options.signal?.reason as unknown) ?? err;
    }
    const code = networkCode(err);
    const cause = isRecord(err) ? err["cause"] : undefined;
    if (phase === "connect" && cause instanceof Error && cause.message === "bad port") {
      return new MicrosandboxError(
        `fetch refuses to connect to ${this.serverUrl}: its port is on the fetch standard's list of blocked ports. Run the msb server on another port (e.g. the default 5555).`,
        "INVALID_PARAMS",
        { cause: err },
      );
    }
    if (phase === "connect" && code === "ECONNREFUSED") {
      return new ServerNotRunningError(
        `the msb server is not running at ${this.serverUrl} (connection refused). Start it with \`msb server start --dev\`, or set MSB_SERVER_URL to where it runs.`,
        "SERVER_NOT_RUNNING",
        { cause: err },
      );
    }
    if (phase === "connect" && code !== undefined && code !== "ECONNRESET" && code !== "EPIPE") {
      return new ServerNotRunningError(
        `cannot reach the msb server at ${this.serverUrl} (${code}). Start it with \`msb server start --dev\`, or check MSB_SERVER_URL.`,
        "SERVER_NOT_RUNNING",
        { cause: err },
      );
    }
    if (code !== undefined || err instanceof TypeError) return this.#lost(err);
    return err;
  }

  #lost(err: unknown): ServerNotRunningError {
    return new ServerNotRunningError(
      `the connection to the msb server at ${this.serverUrl} closed before the answer was complete; the server may have stopped (\`msb server status\`).`,
      "SERVER_NOT_RUNNING",
      { cause: err },
    );
  }
}

function signalFor(options: CallOptions): AbortSignal | undefined {
  const signals: AbortSignal[] = [];
  if (options.signal !== undefined) signals.push(options.signal);
  if (options.timeoutMs !== undefined) signals.push(AbortSignal.timeout(options.timeoutMs));
  if (signals.length === 0) return undefined;
  return signals.length === 1 ? signals[0] : AbortSignal.any(signals);
}

async function deliver(onOutput: OutputCallback, payload: string): Promise<void> {
  let item: unknown;
  try {
    item = JSON.parse(payload);
  } catch {
    return;
  }
  if (isRecord(item) && typeof item["text"] === "string") {
    const stream = typeof item["stream"] === "string" ? item["stream"] : "stdout";
    await onOutput(stream, item["text"]);
  }
}
