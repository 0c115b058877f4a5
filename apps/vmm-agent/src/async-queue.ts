/**
 * An unbounded single-consumer queue turning callbacks into an async iterable. Producers are
 * bounded elsewhere (output caps), so the queue itself does not need a limit.
 */
export interface AsyncQueue<T> extends AsyncIterable<T> {
  push(item: T): void;
  /** Ends the iteration after the queued items; with an error, the consumer gets it instead. */
  end(error?: unknown): void;
}

export function createAsyncQueue<T>(): AsyncQueue<T> {
  const items: T[] = [];
  let ended = false;
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  const notify = (): void => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  return {
    push(item) {
      if (ended) return;
      items.push(item);
      notify();
    },
    end(error) {
      if (ended) return;
      ended = true;
      if (error !== undefined) failure = { error };
      notify();
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        const item = items.shift();
        if (item !== undefined) {
          yield item;
          continue;
        }
        if (ended) {
          if (failure !== undefined) throw failure.error;
          return;
        }
        await new Promise<void>((resolve) => (wake = resolve));
      }
    },
  };
}
