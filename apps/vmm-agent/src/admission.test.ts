import { describe, expect, it } from "vitest";
import { createAdmission } from "./admission.js";

/** The msb error code `fn` throws, or undefined. */
function codeOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return (err as { code?: unknown }).code;
  }
  return undefined;
}

describe("admission control", () => {
  it("refuses a VM beyond the VM count with CAPACITY_EXHAUSTED and admits again after release", () => {
    const admission = createAdmission({
      maxVms: 2,
      memoryBudgetMib: 10_000,
      maxConcurrentBoots: 1,
    });
    const a = admission.reserve(512);
    admission.reserve(512);
    expect(codeOf(() => admission.reserve(512))).toBe("CAPACITY_EXHAUSTED");
    a.release();
    a.release(); // twice is harmless
    expect(admission.reserve(512).memoryMib).toBe(512);
    expect(admission.usage().vms).toBe(2);
  });

  it("refuses a VM whose memory would exceed the budget", () => {
    const admission = createAdmission({ maxVms: 10, memoryBudgetMib: 1024, maxConcurrentBoots: 1 });
    admission.reserve(768);
    expect(codeOf(() => admission.reserve(512))).toBe("CAPACITY_EXHAUSTED");
    expect(admission.reserve(256).memoryMib).toBe(256);
    expect(admission.usage().memoryMib).toBe(1024);
  });

  it("lets only N boots run at once and hands slots over in order", async () => {
    const admission = createAdmission({
      maxVms: 10,
      memoryBudgetMib: 10_000,
      maxConcurrentBoots: 2,
    });
    const signal = new AbortController().signal;
    const first = await admission.acquireBoot(signal);
    await admission.acquireBoot(signal);
    const order: string[] = [];
    const third = admission.acquireBoot(signal).then((release) => {
      order.push("third");
      return release;
    });
    const fourth = admission.acquireBoot(signal).then((release) => {
      order.push("fourth");
      return release;
    });
    expect(admission.usage()).toMatchObject({ booting: 2, queuedBoots: 2 });
    first();
    first(); // releasing twice does not free two slots
    await third;
    expect(order).toEqual(["third"]);
    expect(admission.usage()).toMatchObject({ booting: 2, queuedBoots: 1 });
    (await third)();
    (await fourth)();
    expect(order).toEqual(["third", "fourth"]);
  });

  it("drops a queued boot whose caller went away", async () => {
    const admission = createAdmission({
      maxVms: 10,
      memoryBudgetMib: 10_000,
      maxConcurrentBoots: 1,
    });
    const release = await admission.acquireBoot(new AbortController().signal);
    const controller = new AbortController();
    const waiting = admission.acquireBoot(controller.signal);
    controller.abort(new Error("gone"));
    await expect(waiting).rejects.toThrow("gone");
    expect(admission.usage().queuedBoots).toBe(0);
    release();
    expect(admission.usage().booting).toBe(0);
  });
});
