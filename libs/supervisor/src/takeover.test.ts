import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { killLeftovers } from "./cleanup.js";
import { msbPaths } from "./home.js";
import type { LockRecord } from "./lock.js";
import { createFakeProcessTable } from "./testing/fake-process-table.js";

// A start for an MSB_HOME whose lock holder is dead takes over what that server left: its
// recorded services and any service that names the dead supervisor, but only processes that
// prove they belong to this home (MSB_HOME in their environment), never a foreign one.
const home = mkdtempSync(join(tmpdir(), "msb-takeover-"));
const paths = msbPaths(home);
const CP = ["node", "/opt/msb/apps/control-plane/dist/main.js"];

function staleLock(services: LockRecord["services"]): LockRecord {
  return {
    pid: 4000,
    startTime: "40",
    startedAt: "2026-01-01T00:00:00.000Z",
    url: "http://127.0.0.1:5555",
    host: "127.0.0.1",
    port: 5555,
    dev: false,
    services,
  };
}

describe("taking over a dead server's leftovers", () => {
  it("kills a recorded service of this home that outlived its supervisor", async () => {
    const { table, procs } = createFakeProcessTable({
      4100: { startTime: "41", argv: CP, env: { MSB_HOME: home } },
    });
    const lock = staleLock({ "control-plane": { pid: 4100, startTime: "41" } });
    const killed = await killLeftovers(table, paths, lock);
    expect(killed).toEqual(["control-plane (pid 4100)"]);
    expect(procs.has(4100)).toBe(false);
  });

  it("never kills a recorded pid that does not carry this MSB_HOME", async () => {
    const { table, procs, signals } = createFakeProcessTable({
      4100: { startTime: "41", argv: CP, env: { MSB_HOME: "/somebody/else" } },
      4200: { startTime: "42", argv: ["bash"] },
    });
    const lock = staleLock({
      "control-plane": { pid: 4100, startTime: "41" },
      "vmm-agent": { pid: 4200, startTime: "42" },
    });
    expect(await killLeftovers(table, paths, lock)).toEqual([]);
    expect(signals).toEqual([]);
    expect([...procs.keys()].sort()).toEqual([4100, 4200]);
  });

  it("finds a service of this home that names a dead supervisor even when the lock does not record it", async () => {
    const { table, procs } = createFakeProcessTable({
      // Spawned by the dead supervisor 4000 just before it died: not in its lock.
      4300: {
        startTime: "43",
        argv: CP,
        env: { MSB_HOME: home, MSB_SUPERVISOR: "4000:40" },
      },
      // A live server of this home (a racing start) owns 4400: left alone.
      4399: { startTime: "39" },
      4400: { startTime: "44", argv: CP, env: { MSB_HOME: home, MSB_SUPERVISOR: "4399:39" } },
      // Another home's orphan: not ours to kill.
      4500: {
        startTime: "45",
        argv: CP,
        env: { MSB_HOME: "/other", MSB_SUPERVISOR: "4000:40" },
      },
    });
    const killed = await killLeftovers(table, paths, undefined);
    expect(killed).toEqual(["control-plane (pid 4300)"]);
    expect([...procs.keys()].sort()).toEqual([4399, 4400, 4500]);
  });
});
