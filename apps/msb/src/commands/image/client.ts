import type { CliDeps, GlobalOptions } from "../../cli/context.js";
import { createControlPlaneClient, streamRpc, type ProgressEvent } from "@msb/wire";
import { resolveServerTarget } from "../../project/remote.js";

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
    stream: async (method, params, onProgress, signal) => {
      const { result } = await streamRpc(
        { url, ...(apiKey === undefined ? {} : { apiKey }) },
        method,
        params,
        () => undefined,
        {
          timeoutMs: IMAGE_OPERATION_TIMEOUT_MS,
          ...(signal === undefined ? {} : { signal }),
          logService: "image-service",
          onEvent: (name, value) => {
            if (name === "progress") onProgress(value as ProgressEvent);
          },
        },
      );
      return result;
    },
  };
}
