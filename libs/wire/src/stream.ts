import type { OutputEvent } from "./schemas/events.js";
import { ERROR_CODES, ERROR_CODE_INFO, MsbError, isErrorCode, msbErrorFromWire } from "@msb/errors";

/** Where a client sends its calls: the server's base URL and, unless it is `--dev`, a key. */
export interface ServerTarget {
  readonly url: string;
  readonly apiKey?: string;
}

/** One `output` event of a streamed run (docs/streaming.md). */
export type StreamedOutput = OutputEvent;

export interface StreamRpcOptions {
  readonly timeoutMs: number;
  readonly signal?: AbortSignal;
  /** Every event but `output` and `result` (image `progress`), as it arrives. */
  readonly onEvent?: (name: string, value: unknown) => void;
  /** Which service's log the TIMEOUT message points to. Default control-plane. */
  readonly logService?: string;
}

/**
 * One JSON-RPC call answered as server-sent events (docs/streaming.md): `output` events go to
 * `onOutput` as they arrive, other events to `options.onEvent`, the `result` event is the
 * answer (a JSON-RPC error in it is thrown as its MsbError). A server that answers plain JSON
 * is handled too: `onOutput` then sees nothing and the caller prints the result's output.
 * Aborting `signal` disconnects, which makes the server kill the run.
 */
export async function streamRpc(
  target: ServerTarget,
  method: string,
  params: Record<string, unknown>,
  onOutput: (output: StreamedOutput) => void,
  options: StreamRpcOptions,
): Promise<{ result: unknown; streamed: boolean }> {
  const deadline = AbortSignal.timeout(options.timeoutMs);
  const signal =
    options.signal === undefined ? deadline : AbortSignal.any([options.signal, deadline]);
  const headers: Record<string, string> = {
    "content-type": "application/json",
    accept: "text/event-stream, application/json",
  };
  if (target.apiKey !== undefined) headers["authorization"] = `Bearer ${target.apiKey}`;
  const fail = (err: unknown): MsbError => {
    if (options.signal?.aborted === true) {
      return new MsbError("CANCELLED", `${method} was interrupted; the server stops it as well.`, {
        cause: err,
      });
    }
    if (deadline.aborted) {
      return new MsbError(
        "TIMEOUT",
        `${method} did not finish within ${formatDuration(options.timeoutMs)}. Next step: check \`msb server log --service ${options.logService ?? "control-plane"}\`.`,
        { cause: err, details: { url: target.url, method } },
      );
    }
    return new MsbError(
      "SERVER_NOT_RUNNING",
      `msb server is not running at ${target.url} (or the connection broke); start it with \`msb server start --dev\`.`,
      { cause: err, details: { url: target.url } },
    );
  };
  let res: Response;
  try {
    res = await fetch(`${target.url}/api/v1/rpc`, {
      method: "POST",
      headers,
      body: JSON.stringify({ jsonrpc: "2.0", method, params, id: 1 }),
      signal,
    });
  } catch (err) {
    throw fail(err);
  }
  const streamed = (res.headers.get("content-type") ?? "").startsWith("text/event-stream");
  let body: unknown;
  try {
    body = streamed
      ? await readEventStream(res, (name, value) => {
          if (name === "output") onOutput(value as StreamedOutput);
          else options.onEvent?.(name, value);
        })
      : await res.json().catch(() => undefined);
  } catch (err) {
    throw fail(err);
  }
  return { result: jsonRpcResult(target.url, method, res.status, body), streamed };
}

/** "90 s", "60 minutes": how the CLI has always worded its deadlines. */
function formatDuration(ms: number): string {
  return ms >= 60 * 60_000 && ms % 60_000 === 0 ? `${ms / 60_000} minutes` : `${ms / 1000} s`;
}

/**
 * Reads a JSON-RPC answer sent as server-sent events: every event but `result` goes to
 * `onEvent`; the `result` event's value (the JSON-RPC answer) is returned.
 */
export async function readEventStream(
  res: Response,
  onEvent: (name: string, value: unknown) => void,
): Promise<unknown> {
  if (res.body === null) return undefined;
  const decoder = new TextDecoder();
  let buffer = "";
  let result: unknown;
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    buffer += decoder.decode(chunk, { stream: true });
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let name = "message";
      const data: string[] = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length === 0) continue;
      const value: unknown = JSON.parse(data.join("\n"));
      if (name === "result") result = value;
      else onEvent(name, value);
    }
  }
  return result;
}

/** The result of a JSON-RPC answer, or its error as an MsbError (by `data.code`, else by number). */
export function jsonRpcResult(url: string, method: string, status: number, body: unknown): unknown {
  const answer = body as
    | {
        result?: unknown;
        error?: { code?: unknown; message?: unknown; data?: { code?: unknown } | null };
      }
    | undefined;
  if (answer?.error !== undefined) {
    const data = answer.error.data ?? undefined;
    const message =
      typeof answer.error.message === "string" ? answer.error.message : `${method} failed`;
    const code = isErrorCode(data?.code)
      ? data.code
      : ERROR_CODES.find((c) => ERROR_CODE_INFO[c].jsonRpc === answer.error?.code);
    throw msbErrorFromWire(code, message, data);
  }
  if (answer === undefined || answer === null || !("result" in answer)) {
    throw new MsbError(
      "SERVICE_UNAVAILABLE",
      `msb server at ${url} answered ${method} with HTTP ${status} and no JSON-RPC result. Next step: look at \`msb server log --service control-plane\`.`,
      { details: { url, status, method } },
    );
  }
  return answer.result;
}
