import { createLogger } from "@msb/runtime";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createIdleTracker, type Pausable } from "./idle-pause.js";

const logger = createLogger({ name: "test", level: "silent" });

function fakeVm(): Pausable & { log: string[] } {
  const log: string[] = [];
  return {
    log,
    pause: () => {
      log.push("stop");
      return Promise.resolve();
    },
    resume: () => {
      log.push("cont");
      return Promise.resolve();
    },
  };
}

beforeEach(() => {
  vi.useFakeTimers();
});
afterEach(() => {
  vi.useRealTimers();
});

describe("idle pause", () => {
  it("pauses after the idle time and resumes at the next call", async () => {
    const vm = fakeVm();
    const idle = createIdleTracker(vm, { idleMs: 60_000, logger, vmId: "v" });
    idle.arm();
    await vi.advanceTimersByTimeAsync(59_000);
    expect(vm.log).toEqual([]);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(vm.log).toEqual(["stop"]);
    expect(idle.paused).toBe(true);
    const end = await idle.begin();
    expect(vm.log).toEqual(["stop", "cont"]);
    expect(idle.paused).toBe(false);
    end();
  });

  it("never pauses during a call, however long, and counts idle time from its end", async () => {
    const vm = fakeVm();
    const idle = createIdleTracker(vm, { idleMs: 1_000, logger, vmId: "v" });
    idle.arm();
    const end = await idle.begin();
    await vi.advanceTimersByTimeAsync(10_000);
    expect(vm.log).toEqual([]);
    end();
    await vi.advanceTimersByTimeAsync(999);
    expect(vm.log).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(vm.log).toEqual(["stop"]);
  });

  it("resumes once for concurrent calls", async () => {
    const vm = fakeVm();
    const idle = createIdleTracker(vm, { idleMs: 10, logger, vmId: "v" });
    idle.arm();
    await vi.advanceTimersByTimeAsync(10);
    const [a, b] = await Promise.all([idle.begin(), idle.begin()]);
    expect(vm.log).toEqual(["stop", "cont"]);
    a();
    await vi.advanceTimersByTimeAsync(100);
    expect(vm.log).toEqual(["stop", "cont"]);
    b();
    await vi.advanceTimersByTimeAsync(10);
    expect(vm.log).toEqual(["stop", "cont", "stop"]);
  });

  it("does nothing once disposed or when disabled", async () => {
    const vm = fakeVm();
    const disposed = createIdleTracker(vm, { idleMs: 10, logger, vmId: "v" });
    disposed.arm();
    disposed.dispose();
    createIdleTracker(vm, { idleMs: 0, logger, vmId: "w" }).arm();
    await vi.advanceTimersByTimeAsync(1_000);
    expect(vm.log).toEqual([]);
  });
});
