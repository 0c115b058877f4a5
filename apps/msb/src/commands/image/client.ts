import { MsbError } from "@msb/errors";
import type { CliDeps, GlobalOptions } from "../../cli/context.js";
import { createControlPlaneClient, jsonRpcResult, readEventStream } from "@msb/wire";
import { resolveServerTarget } from "../../project/remote.js";
import type { ProgressEvent } from "./progress.js";

/** A pull, build or push may download or build gigabytes: allow it this long. */
export const IMAGE_OPERATION_TIMEOUT_MS = 60 * 60_000;
/** list and remove only touch the local store. */
const QUICK_TIMEOUT_MS = 60_000;

/** The image methods of the control plane as the image commands call them. */
export interface ImageClient {
  /** A plain JSON-RPC call (image.list, image.remove). */
  call(method: string, params: Record<string, unknown>, signal?: AbortSignal): Promise<unknown>;
  /**
   * A call answered as server-sent events (docs/streaming.md): `progress` events go to
   * `onProgress`, the `result` event is the answer.
   */
  stream(
    method: string,
    params: Record<string, unknown>,
    onProgress: (event: ProgressEvent) => void,
    signal?: AbortSignal,
  ): Promise<unknown>;
}

/**
 * The image commands talk to the server `resolveServerTarget` finds, like every other command.
 * Image methods are host-wide: a namespace-bound `MSB_API_KEY` gets AUTH_FORBIDDEN.
 */
export async function connectImages(global: GlobalOptions, deps: CliDeps): Promise<ImageClient> {
  const { url, apiKey } = await resolveServerTarget(global, deps);
  const plain = createControlPlaneClient({
    url,
    timeoutMs: QUICK_TIMEOUT_MS,
    ...(apiKey === undefined ? {} : { apiKey }),
  });
  return {
    call: (method, params, signal) => plain.rpc(method, params, signal),
    stream: (method, params, onProgress, signal) =>
      streamCall(url, apiKey, method, params, onProgress, signal),
  };
}

async function streamCall(
  url: string,
  apiKey: string | undefined,
  method: string,
  params: Record<string, unknown>,
  onProgress: (event: ProgressEvent) => void,
  signal: AbortSignal | undefined,
): Promise<unknown> {
  const deadline = AbortSignal.timeout(IMAGE_OPERATION_TIMEOUT_MS);
  const combined = signal === undefined ? deadline : AbortSignal.any([signal, deadline]);
  const headers: Record<string, string> = {
    "content-type": "application/json",
    accept: "text/event-stream, application/json",
  };
  if (apiKey !== undefined) headers["authorization"] = `Bearer ${apiKey}`;
  let res: Response;
  try {
    res = await fetch(`${url}/api/v1/rpc`, {
      method: "POST",
      headers,
      body: JSON.stringify({ jsonrpc: "2.0", method, params, id: 1 }),
      signal: combined,
    });
  } catch (err) {
    throw transportError(url, method, err, signal, deadline);
  }
  let body: unknown;
  try {
    if ((res.headers.get("content-type") ?? "").startsWith("text/event-stream")) {
      body = await readEventStream(res, (name, value) => {
        if (name === "progress") onProgress(value as ProgressEvent);
      });
    } else {
      body = await res.json().catch(() => undefined);
    }
  } catch (err) {
    throw transportError(url, method, err, signal, deadline);
  }
  return jsonRpcResult(url, method, res.status, body);
}

function transportError(
  url: string,
  method: string,
  err: unknown,
  signal: AbortSignal | undefined,
  deadline: AbortSignal,
): MsbError {
  if (signal?.aborted === true) {
    return new MsbError("CANCELLED", `${method} was interrupted; the server stops it as well.`, {
      cause: err,
    });
  }
  if (deadline.aborted) {
    return new MsbError(
      "TIMEOUT",
      `${method} did not finish within ${IMAGE_OPERATION_TIMEOUT_MS / 60_000} minutes. Next step: check \`msb server log --service image-service\`.`,
      { cause: err, details: { url, method } },
    );
  }
  return new MsbError(
    "SERVER_NOT_RUNNING",
    `msb server is not running at ${url} (or the connection broke); start it with \`msb server start --dev\`.`,
    { cause: err, details: { url } },
  );
}
