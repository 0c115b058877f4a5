import { mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createConsoleRecorder, kernelPanicLine } from "./console-log.js";

describe("console recorder", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "msb-console-"));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("stops the log file at its cap but keeps the last lines for error messages", async () => {
    const path = join(dir, "console.log");
    const recorder = createConsoleRecorder(path, 64);
    for (let i = 0; i < 100; i++) recorder.write(Buffer.from(`line ${i}\r\n`));
    recorder.write(Buffer.from("\x1b[0mKernel panic - not syncing"));
    recorder.close();
    const file = await readFile(path, "utf8");
    expect(file.startsWith("line 0\r\nline 1\r\n")).toBe(true);
    expect(file).toContain("console log capped");
    expect(file.length).toBeLessThan(200);
    expect(recorder.tail(2)).toEqual(["line 99", "Kernel panic - not syncing"]);
  });

  it("refuses a symlink planted where the log goes instead of truncating its target", async () => {
    const target = join(dir, "host-file");
    await writeFile(target, "precious");
    await symlink(target, join(dir, "console.log"));
    expect(() => createConsoleRecorder(join(dir, "console.log"), 64)).toThrow(/ELOOP/);
    expect(await readFile(target, "utf8")).toBe("precious");
  });
});

describe("kernelPanicLine", () => {
  it("finds the panic line above its stack dump, without the printk time", () => {
    const lines = [
      "[   17.370000] tail invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0",
      "[   17.380000] Kernel panic - not syncing: Out of memory: compulsory panic_on_oom is enabled",
      "[   17.380000] CPU: 0 PID: 51 Comm: tail Not tainted 6.1.0 #1",
      "[   17.380000]  </TASK>",
      "[   17.380000] ---[ end Kernel panic - not syncing: Out of memory: compulsory panic_on_oom is enabled ]---",
    ];
    expect(kernelPanicLine(lines)).toBe(
      "Kernel panic - not syncing: Out of memory: compulsory panic_on_oom is enabled",
    );
    expect(kernelPanicLine(["[    0.1] ok", "msb-agent: ready"])).toBeUndefined();
  });
});
