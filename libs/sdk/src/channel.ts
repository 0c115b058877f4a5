import type { OutputCallback, RpcClient } from "./rpc.js";

/** Receives one chunk of text of one stream; may return a promise, which is awaited. */
export type OutputHandler = (text: string) => void | Promise<void>;

export interface OutputHandlers {
  /** Standard output as it is produced (or all of it at the end, see docs/streaming.md). */
  readonly onStdout?: OutputHandler | undefined;
  /** Standard error, likewise. */
  readonly onStderr?: OutputHandler | undefined;
}

/** What `command`, `metrics` and `files` need from their sandbox (not part of the public API). */
export interface SandboxChannel {
  readonly name: string;
  readonly namespace: string;
  readonly serverUrl: string;
  readonly rpc: RpcClient;
  requireStarted(): void;
  callWithOutput(
    method: string,
    params: Record<string, unknown>,
    timeoutSeconds: number | undefined,
    handlers: OutputHandlers,
    signal: AbortSignal | undefined,
  ): Promise<unknown>;
}

/** Seconds added to a call's own timeout before the client gives up on the answer, so the
 * server's timeout (which answers with a useful result or error) always fires first. */
export const CLIENT_GRACE_SECONDS = 30;
/** Seconds the client waits for `sandbox.stop` and `sandbox.metrics.get`. */
export const CONTROL_TIMEOUT_SECONDS = 60;

export function clientTimeoutMs(timeoutSeconds: number | undefined): number | undefined {
  return timeoutSeconds === undefined ? undefined : (timeoutSeconds + CLIENT_GRACE_SECONDS) * 1000;
}

export function outputDispatcher(handlers: OutputHandlers): OutputCallback {
  return async (stream, text) => {
    const handler = stream === "stderr" ? handlers.onStderr : handlers.onStdout;
    if (handler !== undefined) await handler(text);
  };
}
