import type { Logger } from "@msb/runtime";
import type { Template } from "./templates.js";

/** A pooled VM as the pool sees it: opaque apart from how to get rid of it. */
export interface PoolMember<T> {
  readonly id: string;
  readonly templateKey: string;
  readonly value: T;
}

/** What the pool needs from the outside world (a seam: unit tests pass fakes). */
export interface PoolDeps<T> {
  /**
   * Restores one clone of `template` and pauses it. Rejects when there is no capacity (then
   * the pool stops refilling until the next claim or fill).
   */
  spawn(template: Template, id: string, signal: AbortSignal): Promise<T>;
  /** Stops a pooled VM and frees what it holds (never throws). */
  destroy(value: T): Promise<void>;
  /** Resolves when the pooled VM died by itself (it then leaves the pool). */
  died(value: T): Promise<unknown>;
  readonly logger: Logger;
}

/**
 * Warm pool: per template, up to `target` restored, paused (QMP `stop`, 0 % CPU) clones that
 * a create claims instead of restoring (`cont` + configure + reseed). Refilled in the
 * background one VM at a time; a pooled VM counts against capacity but is the first to go
 * when a real create needs room (`evictOne`).
 */
export interface Pool<T> {
  /** Takes a ready pooled VM of this template (the caller owns it), and refills. */
  take(template: Template): PoolMember<T> | undefined;
  /** Starts filling this template's pool up to the target (no-op when full or target 0). */
  fill(template: Template): void;
  /** Destroys one pooled VM (from the fullest pool) to make room; false when none. */
  evictOne(): Promise<boolean>;
  /** Destroys the ready clones of a template that is gone (evicted); refills stop with it. */
  drop(key: string): Promise<void>;
  counts(key: string): { ready: number; target: number };
  /** Total pooled VMs (ready ones). */
  size(): number;
  /** Resolves once no refill is running. */
  idle(): Promise<void>;
  /** Stops refilling and destroys every pooled VM. */
  close(): Promise<void>;
}

export function createPool<T>(deps: PoolDeps<T>, options: { target: number }): Pool<T> {
  const ready = new Map<string, PoolMember<T>[]>();
  const filling = new Set<string>();
  const abort = new AbortController();
  let chain: Promise<void> = Promise.resolve();
  let seq = 0;
  let closed = false;
  /** The spawn in flight: it holds capacity too, so eviction may cancel it. */
  let spawning: { abort: AbortController; settled: Promise<unknown> } | undefined;

  const list = (key: string): PoolMember<T>[] => {
    let l = ready.get(key);
    if (l === undefined) {
      l = [];
      ready.set(key, l);
    }
    return l;
  };

  const remove = (member: PoolMember<T>): boolean => {
    const l = ready.get(member.templateKey);
    const i = l?.indexOf(member) ?? -1;
    if (l === undefined || i < 0) return false;
    l.splice(i, 1);
    return true;
  };

  async function refill(template: Template): Promise<void> {
    try {
      while (!closed && list(template.key).length < options.target) {
        const id = `pool-${++seq}`;
        const mine = new AbortController();
        let done!: () => void;
        spawning = { abort: mine, settled: new Promise<void>((resolve) => (done = resolve)) };
        try {
          let value: T;
          try {
            value = await deps.spawn(template, id, AbortSignal.any([abort.signal, mine.signal]));
          } catch (err) {
            if (!closed) deps.logger.info({ template: template.key, err }, "pool not refilled");
            return;
          }
          if (closed || mine.signal.aborted) {
            await deps.destroy(value);
            return;
          }
          const member: PoolMember<T> = { id, templateKey: template.key, value };
          list(template.key).push(member);
          void deps.died(value).then(() => {
            if (remove(member)) deps.logger.warn({ template: template.key, id }, "pooled VM died");
          });
        } finally {
          spawning = undefined;
          done();
        }
      }
    } finally {
      filling.delete(template.key);
    }
  }

  const pool: Pool<T> = {
    take(template) {
      const member = list(template.key).shift();
      pool.fill(template);
      return member;
    },

    fill(template) {
      if (closed || options.target <= 0 || filling.has(template.key)) return;
      if (list(template.key).length >= options.target) return;
      filling.add(template.key);
      chain = chain.then(() => refill(template));
    },

    async evictOne() {
      let fullest: PoolMember<T>[] | undefined;
      for (const l of ready.values()) if (l.length > (fullest?.length ?? 0)) fullest = l;
      const member = fullest?.shift();
      if (member === undefined) {
        // Nothing ready: a clone being restored holds capacity as well; cancel it.
        const inFlight = spawning;
        if (inFlight === undefined) return false;
        inFlight.abort.abort();
        await inFlight.settled;
        return true;
      }
      await deps.destroy(member.value);
      return true;
    },

    async drop(key) {
      const members = ready.get(key) ?? [];
      ready.delete(key);
      await Promise.all(members.map((m) => deps.destroy(m.value)));
    },

    counts(key) {
      return { ready: ready.get(key)?.length ?? 0, target: options.target };
    },

    size() {
      let n = 0;
      for (const l of ready.values()) n += l.length;
      return n;
    },

    async idle() {
      let seen: Promise<void> | undefined;
      while (seen !== chain) {
        seen = chain;
        await chain;
      }
    },

    async close() {
      closed = true;
      abort.abort();
      await chain;
      const all = [...ready.values()].flat();
      ready.clear();
      await Promise.all(all.map((m) => deps.destroy(m.value)));
    },
  };
  return pool;
}
