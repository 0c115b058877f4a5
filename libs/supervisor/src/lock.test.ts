import { mkdtempSync, readFileSync, statSync, writeFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { MsbError } from "@msb/errors";
import { createFakeProcessTable } from "./testing/fake-process-table.js";
import { acquireLock, readLockState, type LockRecord } from "./lock.js";

function setup(procs: Parameters<typeof createFakeProcessTable>[0] = {}) {
  const home = mkdtempSync(join(tmpdir(), "msb-lock-"));
  const fake = createFakeProcessTable({ [process.pid]: { startTime: "500" }, ...procs });
  const lockFile = join(home, "run", "server.lock");
  const pidFile = join(home, "run", "server.pid");
  const stale: (LockRecord | undefined)[] = [];
  const acquire = (pid = process.pid, startTime = "500") =>
    acquireLock({
      lockFile,
      pidFile,
      home,
      table: fake.table,
      record: {
        pid,
        startTime,
        startedAt: "2026-01-01T00:00:00.000Z",
        url: "http://127.0.0.1:5555",
        host: "127.0.0.1",
        port: 5555,
        dev: true,
      },
      onStale: (lock) => {
        stale.push(lock);
        return Promise.resolve();
      },
    });
  return { home, lockFile, pidFile, fake, stale, acquire };
}

function writeLock(
  lockFile: string,
  pid: number,
  startTime: string,
  services: LockRecord["services"] = {},
) {
  const record: LockRecord = {
    pid,
    startTime,
    startedAt: "2026-01-01T00:00:00.000Z",
    url: "http://127.0.0.1:5555",
    host: "127.0.0.1",
    port: 5555,
    dev: true,
    services,
  };
  writeFileSync(lockFile, JSON.stringify(record));
}

describe("server lock", () => {
  it("writes pid and start time, and a pidfile, when the home is free", async () => {
    const t = setup();
    const lock = await t.acquire();
    expect(JSON.parse(readFileSync(t.lockFile, "utf8"))).toMatchObject({
      pid: process.pid,
      startTime: "500",
    });
    expect(readFileSync(t.pidFile, "utf8").trim()).toBe(String(process.pid));
    lock.setService("vmm-agent", { pid: 42, startTime: "7" });
    expect(readLockState(t.lockFile, t.fake.table)).toMatchObject({
      kind: "running",
      lock: { services: { "vmm-agent": { pid: 42, startTime: "7" } } },
    });
    lock.release();
    expect(existsSync(t.lockFile)).toBe(false);
    expect(existsSync(t.pidFile)).toBe(false);
  });

  it("creates run/ private to the server's user (0700)", async () => {
    const t = setup();
    const lock = await t.acquire();
    expect(statSync(join(t.home, "run")).mode & 0o777).toBe(0o700);
    lock.release();
  });

  it("refuses a second server with SERVER_ALREADY_RUNNING naming the pid and `msb server stop`", async () => {
    const t = setup({ 4242: { startTime: "900" } });
    await t.acquire(4242, "900");
    const err = await t.acquire().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MsbError);
    expect((err as MsbError).code).toBe("SERVER_ALREADY_RUNNING");
    expect((err as MsbError).message).toContain("pid 4242");
    expect((err as MsbError).message).toContain("msb server stop");
  });

  it("takes over a lock whose process is gone, handing the old record to onStale", async () => {
    const t = setup();
    await t.acquire(4242, "900").then(() => undefined);
    // 4242 never existed in the table: the lock is stale.
    const lock = await t.acquire();
    expect(t.stale.map((s) => s?.pid)).toEqual([4242]);
    expect(lock.record.pid).toBe(process.pid);
  });

  it("treats a recycled pid (same pid, other start time) as stale", async () => {
    const t = setup({ 4242: { startTime: "1000" } });
    const { mkdirSync } = await import("node:fs");
    mkdirSync(join(t.home, "run"), { recursive: true });
    writeLock(t.lockFile, 4242, "900", { "control-plane": { pid: 77, startTime: "901" } });
    expect(readLockState(t.lockFile, t.fake.table).kind).toBe("stale");
    await t.acquire();
    expect(t.stale[0]?.services["control-plane"]).toEqual({ pid: 77, startTime: "901" });
  });

  it("treats a zombie owner and an unreadable lock file as stale", async () => {
    const t = setup({ 4242: { startTime: "900", state: "Z" } });
    const { mkdirSync } = await import("node:fs");
    mkdirSync(join(t.home, "run"), { recursive: true });
    writeLock(t.lockFile, 4242, "900");
    expect(readLockState(t.lockFile, t.fake.table).kind).toBe("stale");
    writeFileSync(t.lockFile, "{not json");
    expect(readLockState(t.lockFile, t.fake.table)).toEqual({ kind: "stale" });
    await t.acquire();
    expect(t.stale).toEqual([undefined]);
  });

  it("does not remove a lock that another server took over meanwhile", async () => {
    const t = setup({ 4242: { startTime: "900" } });
    const mine = await t.acquire();
    writeLock(t.lockFile, 4242, "900");
    mine.release();
    expect(existsSync(t.lockFile)).toBe(true);
  });
});
