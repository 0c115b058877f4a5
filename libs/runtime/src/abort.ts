import { MsbError } from "@msb/errors";

/**
 * A signal that aborts when `parent` aborts or after `timeoutMs`, whichever comes first.
 * The timeout reason is a TIMEOUT MsbError naming the operation, so callers can rethrow it.
 */
export function withDeadline(
  operation: string,
  timeoutMs: number,
  parent?: AbortSignal,
): AbortSignal {
  const controller = new AbortController();
  const timer = setTimeout(() => {
    controller.abort(
      new MsbError("TIMEOUT", `${operation} did not finish within ${timeoutMs} ms.`, {
        details: { operation, timeoutMs },
      }),
    );
  }, timeoutMs);
  timer.unref();
  if (parent !== undefined) {
    if (parent.aborted) controller.abort(parent.reason);
    else parent.addEventListener("abort", () => controller.abort(parent.reason), { once: true });
  }
  controller.signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
  return controller.signal;
}

/** Throws the signal's reason as an MsbError (CANCELLED unless it already is one). */
export function throwIfAborted(signal: AbortSignal | undefined, operation: string): void {
  if (signal?.aborted !== true) return;
  if (signal.reason instanceof MsbError) throw signal.reason;
  throw new MsbError("CANCELLED", `${operation} was cancelled.`, {
    details: { operation },
    cause: signal.reason,
  });
}
