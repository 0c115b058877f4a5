import { createHash } from "node:crypto";
import { spawn } from "node:child_process";
import { mkdirSync, writeFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import {
  freePort,
  isAlive,
  msb,
  processesMentioning,
  readLock,
  rpc,
  startForeground,
  startTimeOf,
  tempHome,
  waitUntil,
  type ForegroundServer,
} from "./harness.js";

// These tests need no VM: `--no-build` skips the kernel, agent and image checks, and nothing
// here starts a sandbox. They run the built services exactly as `msb server start` does.

const homes: ReturnType<typeof tempHome>[] = [];
const servers: ForegroundServer[] = [];

function newHome(): string {
  const home = tempHome();
  homes.push(home);
  return home.path;
}

afterEach(async () => {
  for (const home of homes) await msb(home.path, ["server", "stop"]);
  for (const s of servers.splice(0)) if (s.child.exitCode === null) s.child.kill("SIGKILL");
});
afterAll(() => {
  for (const home of homes.splice(0)) home.remove();
});

describe("msb server (no VMs)", () => {
  it("starts, answers health, refuses a second server and a taken port, reports status, stops cleanly", async () => {
    const home = newHome();
    const port = await freePort();
    const server = startForeground(home, ["--dev", "--no-build", "--port", String(port)]);
    servers.push(server);
    const ready = await server.ready;
    const url = `http://127.0.0.1:${port}`;
    expect(ready).toMatchObject({ status: "ready", url, dev: true, home });

    const health = await fetch(`${url}/api/v1/health`);
    expect(health.status).toBe(200);
    expect(await health.json()).toMatchObject({ message: "Service is healthy" });

    const lock = readLock(home);
    expect(lock.pid).toBe(server.child.pid);
    const children = Object.values(lock.services).map((c) => c.pid);
    expect(Object.keys(lock.services).sort()).toEqual([
      "control-plane",
      "image-service",
      "vmm-agent",
    ]);

    const second = await msb(home, [
      "server",
      "start",
      "--dev",
      "--no-build",
      "--port",
      String(await freePort()),
    ]);
    expect(second.code).toBe(11);
    expect(second.stderr).toContain(`already running for MSB_HOME ${home} (pid ${lock.pid}`);
    expect(second.stderr).toContain("msb server stop");

    const otherHome = newHome();
    const taken = await msb(otherHome, [
      "--json",
      "server",
      "start",
      "--dev",
      "--no-build",
      "--port",
      String(port),
    ]);
    expect(taken.code).toBe(11);
    const takenError = (
      JSON.parse(taken.stderr) as {
        error: { code: string; message: string; details: Record<string, unknown> };
      }
    ).error;
    expect(takenError.code).toBe("PORT_IN_USE");
    expect(takenError.details).toMatchObject({
      port,
      pid: lock.services["control-plane"]?.pid,
      msbHome: home,
    });
    expect(takenError.message).toContain(`msb server stop --home ${home}`);

    const status = await msb(home, ["server", "status", "--json"]);
    expect(status.code).toBe(0);
    const report = JSON.parse(status.stdout) as {
      running: boolean;
      url: string;
      services: { name: string; running: boolean }[];
      sandboxes: unknown[];
    };
    expect(report).toMatchObject({ running: true, url, sandboxes: [] });
    expect(report.services.every((s) => s.running)).toBe(true);

    const stop = await msb(home, ["server", "stop", "--json"]);
    expect(stop.code).toBe(0);
    expect(JSON.parse(stop.stdout)).toMatchObject({
      status: "stopped",
      pid: lock.pid,
      forced: false,
    });
    expect(await server.exited).toBe(0);
    for (const pid of [lock.pid, ...children]) expect(isAlive(pid)).toBe(false);
    expect(existsSync(join(home, "run", "server.lock"))).toBe(false);

    const again = await msb(home, ["server", "stop"]);
    expect(again.code).toBe(0);
    expect(again.stdout).toContain("msb server is not running");
    const down = await msb(home, ["server", "status"]);
    expect(down.code).toBe(10);
  });

  it("reports a port held by a foreign process with its pid", async () => {
    const port = await freePort();
    const holder = spawn(
      process.execPath,
      ["-e", `require("net").createServer().listen(${port}, "127.0.0.1", () => console.log("up"))`],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    try {
      await new Promise((resolve) => holder.stdout.once("data", resolve));
      const result = await msb(newHome(), [
        "server",
        "start",
        "--dev",
        "--no-build",
        "--port",
        String(port),
      ]);
      expect(result.code).toBe(11);
      expect(result.stderr).toContain(`Port ${port} is already in use by pid ${holder.pid}`);
      expect(result.stderr).toContain("--port");
    } finally {
      holder.kill("SIGKILL");
    }
  });

  it("leaves no service behind when the supervisor is killed with SIGKILL, and the next start takes over", async () => {
    const home = newHome();
    const port = await freePort();
    const server = startForeground(home, ["--dev", "--no-build", "--port", String(port)]);
    servers.push(server);
    await server.ready;
    const lock = readLock(home);
    const children = Object.values(lock.services).map((c) => c.pid);
    expect(children.every(isAlive)).toBe(true);

    server.child.kill("SIGKILL");
    await server.exited;
    await waitUntil(
      () => children.every((pid) => !isAlive(pid)),
      "services to die with their supervisor",
    );

    const next = await msb(home, [
      "server",
      "start",
      "--dev",
      "--no-build",
      "--detach",
      "--port",
      String(port),
    ]);
    expect(next.code).toBe(0);
    expect(next.stdout).toContain(`msb server ready at http://127.0.0.1:${port}`);
    expect(readLock(home).pid).not.toBe(lock.pid);
    expect((await msb(home, ["server", "stop"])).code).toBe(0);
  });

  it("takes over a stale lock and kills the services its dead owner left", async () => {
    const home = newHome();
    // A leftover "service" of a server that died without PDEATHSIG (say, setpriv missing);
    // like every service it carries its MSB_HOME, without which a start never touches it.
    const leftover = spawn("sleep", ["1000"], {
      stdio: "ignore",
      env: { ...process.env, MSB_HOME: home },
    });
    const pid = leftover.pid!;
    mkdirSync(join(home, "run"), { recursive: true });
    writeFileSync(
      join(home, "run", "server.lock"),
      JSON.stringify({
        pid: 2 ** 22 - 1, // not a live pid
        startTime: "1",
        startedAt: "2026-01-01T00:00:00.000Z",
        url: "http://127.0.0.1:1",
        host: "127.0.0.1",
        port: 1,
        dev: true,
        services: { "vmm-agent": { pid, startTime: startTimeOf(pid) } },
      }),
    );
    const start = await msb(home, [
      "server",
      "start",
      "--dev",
      "--no-build",
      "--detach",
      "--port",
      String(await freePort()),
    ]);
    expect(start.code).toBe(0);
    await waitUntil(
      () => !isAlive(pid) || leftover.exitCode !== null || leftover.signalCode !== null,
      "the leftover to be killed",
    );
    expect(leftover.signalCode ?? "alive").toMatch(/SIGTERM|SIGKILL/);
    expect(readLock(home).pid).not.toBe(2 ** 22 - 1);
    expect((await msb(home, ["server", "stop"])).code).toBe(0);
  });

  it("with --key: health is open, RPC needs a key from keygen, and the key never shows in ps", async () => {
    const home = newHome();
    const port = await freePort();
    const secret = `e2e-secret-${process.pid}-${Date.now()}`;
    const start = await msb(home, [
      "server",
      "start",
      "--no-build",
      "--detach",
      "--port",
      String(port),
      "--key",
      secret,
    ]);
    expect(start.code).toBe(0);
    expect(start.stdout).not.toContain(secret);
    const url = `http://127.0.0.1:${port}`;

    expect((await fetch(`${url}/api/v1/health`)).status).toBe(200);
    const anonymous = await rpc(url, "sandbox.metrics.get", { namespace: "*" });
    expect((anonymous.body["error"] as { code: number }).code).toBe(-32002);

    const fromServerKey = await msb(home, ["server", "keygen", "--json"]);
    const wrong = await rpc(
      url,
      "sandbox.metrics.get",
      { namespace: "*" },
      (JSON.parse(fromServerKey.stdout) as { key: string }).key,
    );
    expect((wrong.body["error"] as { code: number }).code).toBe(-32002);

    const keygen = await msb(home, [
      "server",
      "keygen",
      "--key",
      secret,
      "--expire",
      "1h",
      "--json",
    ]);
    expect(keygen.code).toBe(0);
    const { key } = JSON.parse(keygen.stdout) as { key: string };
    const authed = await rpc(url, "sandbox.metrics.get", { namespace: "*" }, key);
    expect(authed.status).toBe(200);
    expect(authed.body["result"]).toEqual({ sandboxes: [] });

    expect(processesMentioning(secret)).toEqual([]);
    // The derived secret (docs/cli.md: SHA-256 of a non-hex --key) must not leak either.
    expect(processesMentioning(createHash("sha256").update(secret).digest("hex"))).toEqual([]);
    expect((await msb(home, ["server", "stop"])).code).toBe(0);
  });
});
