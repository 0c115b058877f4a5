import { MsbError } from "@msb/errors";
import type { CallOptions } from "./types.js";

/** A promise with its settle functions, for answers that arrive on another path. */
export interface Deferred<T> {
  readonly promise: Promise<T>;
  readonly resolve: (v: T) => void;
  readonly reject: (e: unknown) => void;
}

export function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

/**
 * Races `promise` against the call's deadline and abort signal. On either, `onGiveUp` runs
 * first (the caller forgets the stream) and the call fails with AGENT_TIMEOUT or CANCELLED.
 */
export async function withDeadline<T>(
  promise: Promise<T>,
  options: CallOptions,
  defaultTimeoutMs: number,
  what: string,
  onGiveUp: () => void,
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? defaultTimeoutMs;
  const signal = options.signal;
  if (signal?.aborted) {
    onGiveUp();
    throw new MsbError("CANCELLED", `${what} was cancelled.`);
  }
  let timer: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const race = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onGiveUp();
      reject(
        new MsbError(
          "AGENT_TIMEOUT",
          `The guest agent did not answer ${what} within ${timeoutMs} ms; the VM may be overloaded or hung.`,
          { details: { timeoutMs } },
        ),
      );
    }, timeoutMs);
    onAbort = () => {
      onGiveUp();
      reject(new MsbError("CANCELLED", `${what} was cancelled.`));
    };
    signal?.addEventListener("abort", onAbort, { once: true });
  });
  try {
    return await Promise.race([promise, race]);
  } finally {
    clearTimeout(timer);
    if (onAbort) signal?.removeEventListener("abort", onAbort);
  }
}
