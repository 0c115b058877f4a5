import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "@msb/runtime";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import type { TemplateInputs } from "./template-key.js";
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
  return createTemplateManager(
    { builder, logger },
    {
      templatesDir: join(dir, "templates"),
      memoryDir: join(dir, "shm"),
      retryFailedAfterMs: 60_000,
      now: () => clock,
    },
  );
}

describe("template manager", () => {
  it("builds once per key in the background and reports ready only when built", async () => {
    const gate = gatedBuilder();
    const m = manager(gate.builder);
    await m.init();
    expect(m.ready(inputs)).toBeUndefined();
    m.ensure(inputs);
    m.ensure({ ...inputs });
    expect(m.list().map((t) => t.state)).toEqual(["building"]);
    expect(m.ready(inputs)).toBeUndefined();
    await gate.finish();
    await m.idle();
    expect(gate.calls).toBe(1);
    expect(m.ready(inputs)).toMatchObject({ warmLanguage: "python", replStream: 3 });
    m.ensure({ ...inputs, memoryMib: 512 });
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
    m.ensure(inputs);
    await gate.finish(new Error("boot timed out"));
    await m.idle();
    expect(m.list()[0]).toMatchObject({ state: "failed", reason: "boot timed out" });
    expect(await readdir(join(dir, "shm"))).toEqual([]);
    m.ensure(inputs);
    expect(gate.calls).toBe(1);
    clock += 60_000;
    m.ensure(inputs);
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
    m.ensure(inputs);
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
    m.ensure(inputs);
    await gate.finish();
    await m.idle();
    m.ensure({ ...inputs, vcpus: 2 }); // left building: close aborts it
    await m.close();
    expect(gate.signals.every((s) => s.aborted)).toBe(true);
    expect(await readdir(join(dir, "templates"))).toEqual([]);
    await expect(readdir(join(dir, "shm"))).rejects.toThrow(/ENOENT/);
  });
});
