import { createLogger } from "@msb/runtime";
import { describe, expect, it } from "vitest";
import { createPool, type PoolDeps } from "./pool.js";
import type { Template } from "./templates.js";

const logger = createLogger({ name: "test", level: "silent" });

function template(key: string): Template {
  return { key } as Template;
}

interface FakeVm {
  readonly id: string;
  destroyed: boolean;
  die(): void;
  readonly died: Promise<void>;
}

/** Spawns fake VMs; `capacity` of them may exist at once, like admission would allow. */
function fakes(capacity = 10): PoolDeps<FakeVm> & { live(): number; spawned: FakeVm[] } {
  const spawned: FakeVm[] = [];
  const live = (): number => spawned.filter((v) => !v.destroyed).length;
  return {
    logger,
    spawned,
    live,
    spawn(_t, id, signal) {
      if (live() >= capacity) return Promise.reject(new Error("CAPACITY_EXHAUSTED"));
      if (signal.aborted) return Promise.reject(new Error("aborted"));
      let die!: () => void;
      const vm: FakeVm = {
        id,
        destroyed: false,
        die: () => die(),
        died: new Promise<void>((resolve) => (die = resolve)),
      };
      spawned.push(vm);
      return Promise.resolve(vm);
    },
    destroy(vm) {
      vm.destroyed = true;
      return Promise.resolve();
    },
    died: (vm) => vm.died,
  };
}

describe("pool", () => {
  it("fills each template up to the target and refills after a claim", async () => {
    const deps = fakes();
    const pool = createPool(deps, { target: 2 });
    const t = template("a");
    pool.fill(t);
    await pool.idle();
    expect(pool.counts("a")).toEqual({ ready: 2, target: 2 });
    const claimed = pool.take(t);
    expect(claimed?.value.id).toBe("pool-1");
    expect(pool.counts("a").ready).toBe(1);
    await pool.idle();
    expect(pool.counts("a").ready).toBe(2);
    expect(deps.spawned).toHaveLength(3);
    await pool.close();
  });

  it("keeps nothing when the target is 0", async () => {
    const deps = fakes();
    const pool = createPool(deps, { target: 0 });
    pool.fill(template("a"));
    await pool.idle();
    expect(pool.take(template("a"))).toBeUndefined();
    expect(deps.spawned).toHaveLength(0);
  });

  it("stops refilling when there is no capacity, without failing anything", async () => {
    const deps = fakes(1);
    const pool = createPool(deps, { target: 3 });
    pool.fill(template("a"));
    await pool.idle();
    expect(pool.counts("a").ready).toBe(1);
    await pool.close();
  });

  it("evicts pooled VMs first, from the fullest pool, and says when there is none", async () => {
    const deps = fakes();
    const pool = createPool(deps, { target: 2 });
    pool.fill(template("a"));
    pool.fill(template("b"));
    await pool.idle();
    pool.take(template("b")); // b refills to 2 in the background
    await pool.idle();
    expect(await pool.evictOne()).toBe(true);
    expect(pool.size()).toBe(3);
    await pool.close();
    expect(await pool.evictOne()).toBe(false);
    expect(deps.live()).toBe(1); // the claimed one belongs to its sandbox, not the pool
  });

  it("forgets a pooled VM that died by itself", async () => {
    const deps = fakes();
    const pool = createPool(deps, { target: 1 });
    pool.fill(template("a"));
    await pool.idle();
    deps.spawned[0]?.die();
    await deps.spawned[0]?.died;
    await Promise.resolve();
    expect(pool.counts("a").ready).toBe(0);
    expect(pool.take(template("a"))).toBeUndefined();
    await pool.close();
  });

  it("destroys every pooled VM at close", async () => {
    const deps = fakes();
    const pool = createPool(deps, { target: 2 });
    pool.fill(template("a"));
    await pool.idle();
    await pool.close();
    expect(deps.live()).toBe(0);
    pool.fill(template("a"));
    await pool.idle();
    expect(deps.spawned).toHaveLength(2);
  });
});
