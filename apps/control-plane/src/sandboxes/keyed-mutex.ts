/**
 * One operation at a time per key (a sandbox's `namespace/name`): concurrent starts and stops
 * of one sandbox queue up in arrival order, different sandboxes do not wait for each other.
 */
export class KeyedMutex {
  readonly #tails = new Map<string, Promise<void>>();

  async run<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.#tails.get(key) ?? Promise.resolve();
    let release!: () => void;
    const mine = new Promise<void>((resolve) => {
      release = resolve;
    });
    const tail = previous.then(() => mine);
    this.#tails.set(key, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.#tails.get(key) === tail) this.#tails.delete(key);
    }
  }

  /** Whether an operation on `key` is running or queued. */
  isBusy(key: string): boolean {
    return this.#tails.has(key);
  }
}
