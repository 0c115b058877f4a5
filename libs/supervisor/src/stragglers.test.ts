import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createFakeProcessTable } from "./testing/fake-process-table.js";
import { findQemuStragglers } from "./stragglers.js";
import { terminateAll } from "./terminate.js";

describe("findQemuStragglers", () => {
  it("finds QEMU by pidfile or by an argv pointing into this home, never other programs or homes", async () => {
    const sandboxes = join(mkdtempSync(join(tmpdir(), "msb-str-")), "sandboxes");
    mkdirSync(join(sandboxes, "default", "a"), { recursive: true });
    mkdirSync(join(sandboxes, "default", "b"), { recursive: true });
    writeFileSync(join(sandboxes, "default", "a", "qemu.pid"), "100\n");
    writeFileSync(join(sandboxes, "default", "b", "qemu.pid"), "200\n"); // recycled: now bash
    writeFileSync(join(sandboxes, "default", "b", "qemu.pid.tmp-1"), "300\n");
    const { table, procs } = createFakeProcessTable({
      100: { startTime: "1", argv: ["qemu-system-x86_64", "-M", "microvm"] },
      200: { startTime: "2", argv: ["bash"] },
      300: {
        startTime: "3",
        argv: ["qemu-system-x86_64", "-drive", `file=${sandboxes}/ns/c/scratch.ext4`],
      },
      400: {
        startTime: "4",
        argv: ["qemu-system-x86_64", "-drive", "file=/other/home/sandboxes/x/scratch.ext4"],
      },
    });
    const found = findQemuStragglers(table, sandboxes);
    expect(found.map((r) => r.pid).sort()).toEqual([100, 300]);
    expect(await terminateAll(table, found, { graceMs: 1_000, pollMs: 1 })).toHaveLength(2);
    expect([...procs.keys()].sort()).toEqual([200, 400]);
  });
});
