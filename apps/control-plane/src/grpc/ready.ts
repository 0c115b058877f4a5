import type { Client } from "@grpc/grpc-js";
import { MsbError } from "@msb/errors";

/**
 * Resolves once the channel to a service is connected, or throws SERVICE_UNAVAILABLE after
 * `timeoutMs` (or CANCELLED when `signal` aborts). A health probe that costs the service nothing.
 */
export function waitForReady(
  client: Client,
  service: string,
  timeoutMs: number,
  signal: AbortSignal,
): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(new MsbError("CANCELLED", `The check of the ${service} was cancelled.`));
      return;
    }
    client.waitForReady(new Date(Date.now() + timeoutMs), (err) => {
      if (err === undefined) resolve();
      else
        reject(
          new MsbError(
            "SERVICE_UNAVAILABLE",
            `The ${service} is not reachable; it may be starting or restarting. Retry in a few seconds; 'msb server status' shows its state.`,
            { details: { service }, cause: err },
          ),
        );
    });
  });
}
