import type { Progress } from "@msb/proto";

/** A progress event with every field defaulted (shared with the control plane's tests). */
export { progressEvent as progress } from "@msb/proto";

/** A long operation: yields progress, returns its result. */
export type Operation<T> = AsyncGenerator<Progress, T, undefined>;

/**
 * Runs `task`, yielding whatever it emits while it runs, then returns its result. Bridges
 * callback-style progress (byte counters, child process output) into an {@link Operation}.
 * Events are not dropped; the emitter never blocks.
 */
export async function* withProgress<T>(
  task: (emit: (event: Progress) => void) => Promise<T>,
): Operation<T> {
  const queue: Progress[] = [];
  let wake: (() => void) | undefined;
  let settled = false;
  const emit = (event: Progress): void => {
    queue.push(event);
    wake?.();
  };
  const running = task(emit).finally(() => {
    settled = true;
    wake?.();
  });
  // Surface a rejection through `await running` below, not as an unhandled one.
  running.catch(() => undefined);
  for (;;) {
    while (queue.length > 0) yield queue.shift() as Progress;
    if (settled) break;
    await new Promise<void>((resolve) => {
      wake = resolve;
      if (queue.length > 0 || settled) resolve();
    });
    wake = undefined;
  }
  return await running;
}

/** Drains an operation, handing progress to `onProgress`; returns its result. */
export async function runOperation<T>(
  op: Operation<T>,
  onProgress?: (p: Progress) => void,
): Promise<T> {
  for (;;) {
    const next = await op.next();
    if (next.done === true) return next.value;
    onProgress?.(next.value);
  }
}

/** Calls `emit` at most every `intervalMs` (and always for `final`). */
export function throttle(intervalMs: number): (final: boolean) => boolean {
  let last = 0;
  return (final) => {
    const now = Date.now();
    if (!final && now - last < intervalMs) return false;
    last = now;
    return true;
  };
}
