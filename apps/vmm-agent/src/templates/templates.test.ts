import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "@msb/runtime";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { TemplateInputs } from "./template-key.js";
import { createAdmission } from "../admission.js";
import { createTemplateManager, type BuiltTemplate, type TemplateBuilder } from "./templates.js";

const inputs: TemplateInputs = {
  kernelPath: "/k/vmlinux",
  initramfsPath: "/k/initramfs.cpio",
  kernel: "/k/vmlinux:1:1:1",
  initramfs: "/k/initramfs.cpio:1:1:2",
  rootfs: "/img/a.erofs:1:1:3",
  rootfsPath: "/img/a.erofs",
  imageReference: "python",
  memoryMib: 256,
  vcpus: 1,
  network: "public",
  diskQuotaBytes: 1 << 26,
  qemuVersion: "7.2.22",
  accelerator: "tcg",
};

/** A builder the test releases by hand; it writes the files a real one would. */
function gatedBuilder(): {
  builder: TemplateBuilder;
  calls: number;
  finish(result?: BuiltTemplate | Error): Promise<void>;
  signals: AbortSignal[];
} {
  const pending: Array<(r: BuiltTemplate | Error) => void> = [];
  const state = {
    calls: 0,
    signals: [] as AbortSignal[],
    builder: (async ({ paths }, signal) => {
      state.calls++;
      state.signals.push(signal);
      await writeFile(paths.statePath, "state");
      await writeFile(paths.memoryPath, "ram");
      const r = await new Promise<BuiltTemplate | Error>((resolve) => {
        pending.push(resolve);
        signal.addEventListener("abort", () => resolve(new Error("aborted")));
      });
      if (r instanceof Error) throw r;
      return r;
    }) as TemplateBuilder,
    async finish(result: BuiltTemplate | Error = { warmLanguage: "python", replStream: 3 }) {
      while (pending.length === 0) await new Promise((r) => setImmediate(r));
      pending.shift()?.(result);
    },
  };
  return state;
}

let dir: string;
let clock: number;
const logger = createLogger({ name: "test", level: "silent" });

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "msb-templates-"));
  clock = 1_000;
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

function manager(builder: TemplateBuilder) {
  const admission = createAdmission({
    maxVms: 10,
    memoryBudgetMib: 100_000,
    maxConcurrentBoots: 2,
  });
  return createTemplateManager(
    { builder, logger, admission },
    {
      templatesDir: join(dir, "templates"),
      memoryDir: join(dir, "shm"),
      retryFailedAfterMs: 60_000,
      now: () => clock,
      maxMemoryMib: 100_000,
      maxNamespaceMemoryMib: 100_000,
    },
  );
}

describe("template manager", () => {
  it("builds once per key in the background and reports ready only when built", async () => {
    const gate = gatedBuilder();
    const m = manager(gate.builder);
    await m.init();
    expect(m.ready(inputs)).toBeUndefined();
    m.ensure(inputs, "ns");
    m.ensure({ ...inputs }, "ns");
    expect(m.list().map((t) => t.state)).toEqual(["building"]);
    expect(m.ready(inputs)).toBeUndefined();
    await gate.finish();
    await m.idle();
    expect(gate.calls).toBe(1);
    expect(m.ready(inputs)).toMatchObject({ warmLanguage: "python", replStream: 3 });
    m.ensure({ ...inputs, memoryMib: 512 }, "ns");
    await gate.finish();
    await m.idle();
    expect(m.list().map((t) => [t.inputs.memoryMib, t.state])).toEqual([
      [256, "ready"],
      [512, "ready"],
    ]);
    await m.close();
  });

  it("marks a failed build, deletes its files and retries only after the back-off", async () => {
    const gate = gatedBuilder();
    const m = manager(gate.builder);
    await m.init();
    m.ensure(inputs, "ns");
    await gate.finish(new Error("boot timed out"));
    await m.idle();
    expect(m.list()[0]).toMatchObject({ state: "failed", reason: "boot timed out" });
    expect(await readdir(join(dir, "shm"))).toEqual([]);
    m.ensure(inputs, "ns");
    expect(gate.calls).toBe(1);
    clock += 60_000;
    m.ensure(inputs, "ns");
    await gate.finish();
    await m.idle();
    expect(gate.calls).toBe(2);
    expect(m.ready(inputs)).toBeDefined();
    await m.close();
  });

  it("drops a template whose restore failed so that the next cold boot rebuilds it", async () => {
    const gate = gatedBuilder();
    const m = manager(gate.builder);
    await m.init();
    m.ensure(inputs, "ns");
    await gate.finish();
    await m.idle();
    const key = m.ready(inputs)?.key ?? "";
    m.discard(key, "restore failed: bad state");
    expect(m.ready(inputs)).toBeUndefined();
    expect(m.list()[0]).toMatchObject({ state: "failed", reason: "restore failed: bad state" });
    await m.close();
  });

  it("deletes what an earlier process left at init, and its own files at close", async () => {
    const gate = gatedBuilder();
    const m = manager(gate.builder);
    await m.init();
    await writeFile(join(dir, "templates", "stale"), "x");
    await m.init();
    expect(await readdir(join(dir, "templates"))).toEqual([]);
    m.ensure(inputs, "ns");
    await gate.finish();
    await m.idle();
    m.ensure({ ...inputs, vcpus: 2 }, "ns"); // left building: close aborts it
    await m.close();
    expect(gate.signals.every((s) => s.aborted)).toBe(true);
    expect(await readdir(join(dir, "templates"))).toEqual([]);
    await expect(readdir(join(dir, "shm"))).rejects.toThrow(/ENOENT/);
  });
});

// Issue 12, item 5: every (memory, cpus, …) combination left a template RAM file of the
// guest's size in /dev/shm; admission did not count it and nothing evicted it.
describe("template memory", () => {
  const instant: TemplateBuilder = async ({ paths }) => {
    await writeFile(paths.statePath, "state");
    await writeFile(paths.memoryPath, "ram");
    return { warmLanguage: "", replStream: undefined };
  };
  const sized = (memoryMib: number): TemplateInputs => ({ ...inputs, memoryMib });

  it("counts template RAM in admission, caps it, and evicts the least recently used", async () => {
    const admission = createAdmission({
      maxVms: 10,
      memoryBudgetMib: 100_000,
      maxConcurrentBoots: 2,
    });
    const manager = createTemplateManager(
      { builder: instant, logger, admission },
      {
        templatesDir: join(dir, "templates"),
        memoryDir: join(dir, "shm"),
        retryFailedAfterMs: 1_000,
        now: () => clock,
        maxMemoryMib: 1_536,
        maxNamespaceMemoryMib: 100_000,
      },
    );
    await manager.init();
    for (const mib of [256, 512, 768]) {
      clock += 1;
      manager.ensure(sized(mib), "ns1");
      await manager.idle();
    }
    expect(admission.usage().memoryMib).toBe(1_536);
    clock += 1;
    expect(manager.ready(sized(256))).toBeDefined(); // used: 512 is now the oldest
    clock += 1;
    manager.ensure(sized(1_024), "ns1");
    await manager.idle();
    const left = manager
      .list()
      .map((t) => t.inputs.memoryMib)
      .sort((a, b) => a - b);
    // 512 and 768 made room (oldest first) for 1024; total within the cap.
    expect(left).toEqual([256, 1_024]);
    expect(admission.usage().memoryMib).toBe(1_280);
    expect(manager.memory()).toEqual({ usedMib: 1_280, maxMib: 1_536 });
    expect((await readdir(join(dir, "shm"))).length).toBe(2);
    await manager.close();
    expect(admission.usage().memoryMib).toBe(0);
  });

  it("caps one namespace's templates without evicting another's", async () => {
    const admission = createAdmission({
      maxVms: 10,
      memoryBudgetMib: 100_000,
      maxConcurrentBoots: 2,
    });
    const manager = createTemplateManager(
      { builder: instant, logger, admission },
      {
        templatesDir: join(dir, "templates"),
        memoryDir: join(dir, "shm"),
        retryFailedAfterMs: 1_000,
        now: () => clock,
        maxMemoryMib: 100_000,
        maxNamespaceMemoryMib: 600,
      },
    );
    await manager.init();
    manager.ensure(sized(512), "other");
    for (const mib of [200, 250, 300]) {
      clock += 1;
      manager.ensure(sized(mib), "greedy");
      await manager.idle();
    }
    const left = manager
      .list()
      .map((t) => t.inputs.memoryMib)
      .sort((a, b) => a - b);
    // 200 (the oldest of greedy's) made room for 300; other's 512 stays.
    expect(left).toEqual([250, 300, 512]);
    // A template bigger than the cap is never built.
    manager.ensure(sized(700), "greedy");
    await manager.idle();
    expect(manager.ready(sized(700))).toBeUndefined();
    await manager.close();
  });

  it("builds no template when admission has no memory left for it", async () => {
    const admission = createAdmission({ maxVms: 10, memoryBudgetMib: 300, maxConcurrentBoots: 2 });
    admission.reserve(200);
    const manager = createTemplateManager(
      { builder: instant, logger, admission },
      {
        templatesDir: join(dir, "templates"),
        memoryDir: join(dir, "shm"),
        retryFailedAfterMs: 1_000,
        maxMemoryMib: 100_000,
        maxNamespaceMemoryMib: 100_000,
      },
    );
    await manager.init();
    manager.ensure(sized(256), "ns");
    await manager.idle();
    expect(manager.ready(sized(256))).toBeUndefined();
    expect(admission.usage().memoryMib).toBe(200);
    await manager.close();
  });
});

describe("template memory under VM pressure", () => {
  it("gives its least recently used template's RAM to a VM that needs it", async () => {
    const admission = createAdmission({
      maxVms: 10,
      memoryBudgetMib: 1_000,
      maxConcurrentBoots: 2,
    });
    const m = createTemplateManager(
      {
        builder: async ({ paths }) => {
          await writeFile(paths.memoryPath, "ram");
          return { warmLanguage: "", replStream: undefined };
        },
        logger,
        admission,
      },
      {
        templatesDir: join(dir, "templates"),
        memoryDir: join(dir, "shm"),
        retryFailedAfterMs: 1_000,
        now: () => clock,
        maxMemoryMib: 100_000,
        maxNamespaceMemoryMib: 100_000,
      },
    );
    await m.init();
    m.ensure({ ...inputs, memoryMib: 600 }, "ns");
    await m.idle();
    expect(() => admission.reserve(600)).toThrow(/Not enough memory/);
    expect(m.evictOne()).toBe(true);
    expect(admission.reserve(600).memoryMib).toBe(600);
    expect(m.evictOne()).toBe(false);
    await m.close();
  });
});
