import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "@msb/runtime";
import { afterEach, describe, expect, it } from "vitest";
import { MsbError } from "@msb/errors";
import { createProcfsTable, isSameLiveProcess } from "./proc.js";
import { waitForSocket } from "./readiness.js";
import { PARENT_GUARD } from "./services.js";
import {
  createSupervisor,
  type ServiceSpec,
  type Supervisor,
  type SupervisorEvent,
} from "./supervisor.js";

// A stand-in service: listens on a unix socket (like image-service / vmm-agent), logs pino-ish
// JSON, and misbehaves on request. The supervisor is what is under test, not the services.
const FAKE = `
const net = require("node:net");
const mode = process.env.FAKE_MODE;
const log = (level, msg) => console.log(JSON.stringify({ level, time: new Date().toISOString(), svc: process.env.FAKE_NAME, msg }));
if (mode === "fail") { log(50, "cannot open database: disk full"); process.exit(3); }
const server = net.createServer((s) => s.end()).listen(process.env.FAKE_SOCKET, () => log(30, "listening"));
// Crashes once the test creates the trigger file: after start, so start itself succeeds.
if (mode === "crash-after-ready") setInterval(() => { if (require("node:fs").existsSync(process.env.FAKE_TRIGGER)) { console.error("Error: segfault in native module"); process.exit(1); } }, 20);
if (mode === "stubborn") process.on("SIGTERM", () => log(40, "ignoring SIGTERM"));
else process.on("SIGTERM", () => { log(30, "bye " + process.env.FAKE_NAME); server.close(); process.exit(0); });
`;

const supervisors: Supervisor[] = [];
afterEach(async () => {
  for (const s of supervisors.splice(0)) {
    s.killNow();
    await s.stop("test over");
  }
});

function setup(
  modes: Record<string, string>,
  gate?: { readonly open: Promise<void>; readonly reached: () => void },
) {
  const dir = mkdtempSync(join(tmpdir(), "msb-sup-"));
  const script = join(dir, "fake.cjs");
  writeFileSync(script, FAKE);
  const events: SupervisorEvent[] = [];
  const specs: ServiceSpec[] = ["image-service", "vmm-agent", "control-plane"].map((name, i) => {
    const socket = join(dir, `${name}.sock`);
    return {
      name,
      stage: i < 2 ? 0 : 1,
      command: process.execPath,
      args: [script],
      env: {
        ...process.env,
        FAKE_TRIGGER: join(dir, "crash-now"),
        FAKE_NAME: name,
        FAKE_SOCKET: socket,
        FAKE_MODE: modes[name] ?? "ok",
      },
      logFile: join(dir, "logs", `${name}.log`),
      // With a gate, the first stage is up but not yet "ready" until the test opens it.
      ready: async (signal) => {
        await waitForSocket(socket, signal);
        if (gate !== undefined && i < 2) {
          gate.reached();
          await gate.open;
        }
      },
      stopTimeoutMs: 1_000,
      socketPath: socket,
    };
  });
  const table = createProcfsTable();
  const supervisor = createSupervisor({
    services: specs,
    stopOrder: ["control-plane", "vmm-agent", "image-service"],
    logger: createLogger({ name: "test", level: "silent" }),
    table,
    readyTimeoutMs: 60_000,
    restart: { baseDelayMs: 10, maxDelayMs: 40, fastCrashWindowMs: 60_000, maxFastCrashes: 3 },
    onEvent: (e) => events.push(e),
  });
  supervisors.push(supervisor);
  return { dir, supervisor, events, table };
}

const pidsOf = (events: SupervisorEvent[]) =>
  events.flatMap((e) => (e.type === "spawned" ? [{ pid: e.pid, startTime: e.startTime }] : []));

describe("supervisor", () => {
  it("starts the socket services before the control plane and stops in reverse order", async () => {
    const { supervisor, events, table, dir } = setup({});
    await supervisor.start();
    const readyOrder = events.flatMap((e) => (e.type === "ready" ? [e.service] : []));
    expect(readyOrder.slice(2)).toEqual(["control-plane"]);
    expect(new Set(readyOrder.slice(0, 2))).toEqual(new Set(["image-service", "vmm-agent"]));
    expect([...supervisor.children().keys()].sort()).toEqual([
      "control-plane",
      "image-service",
      "vmm-agent",
    ]);

    await supervisor.stop("test");
    const exits = events.flatMap((e) => (e.type === "exited" ? [e.service] : []));
    expect(exits).toEqual(["control-plane", "vmm-agent", "image-service"]);
    for (const p of pidsOf(events))
      expect(isSameLiveProcess(table, p.pid, p.startTime)).toBe(false);
    expect(readFileSync(join(dir, "logs", "vmm-agent.log"), "utf8")).toContain("bye vmm-agent");
    expect((await supervisor.done).error).toBeUndefined();
  });

  it("says which service could not start and why, and leaves nothing running", async () => {
    const { supervisor, events, table } = setup({ "vmm-agent": "fail" });
    const err = await supervisor.start().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MsbError);
    expect((err as MsbError).code).toBe("SERVICE_UNAVAILABLE");
    expect((err as MsbError).message).toMatch(/^vmm-agent exited with code 3/);
    expect((err as MsbError).message).toContain("cannot open database: disk full");
    expect(events.some((e) => e.type === "spawned" && e.service === "control-plane")).toBe(false);
    for (const p of pidsOf(events))
      expect(isSameLiveProcess(table, p.pid, p.startTime)).toBe(false);
  });

  it("restarts a crashed service, then gives up after repeated fast crashes and names it", async () => {
    const { supervisor, events, table, dir } = setup({ "image-service": "crash-after-ready" });
    await supervisor.start();
    writeFileSync(join(dir, "crash-now"), "");
    const outcome = await supervisor.done;
    expect(outcome.error?.code).toBe("SERVICE_UNAVAILABLE");
    expect(outcome.error?.message).toMatch(
      /^image-service crashed 3 times in a row \(last: exited with code 1\)/,
    );
    expect(outcome.error?.message).toContain("segfault in native module");
    expect(
      events
        .filter((e) => e.type === "restarting")
        .map((e) => e.type === "restarting" && e.delayMs),
    ).toEqual([10, 20]);
    for (const p of pidsOf(events))
      expect(isSameLiveProcess(table, p.pid, p.startTime)).toBe(false);
  });

  it("creates the logs directory private to the server's user (0700)", () => {
    const { dir } = setup({});
    expect(statSync(join(dir, "logs")).mode & 0o777).toBe(0o700);
  });

  it("spawns nothing once stop has begun: a stage that becomes ready during stop is not followed", async () => {
    let open: () => void = () => undefined;
    let reached: () => void = () => undefined;
    let atGate = 0;
    const bothUp = new Promise<void>((resolve) => {
      reached = () => {
        atGate += 1;
        if (atGate === 2) resolve();
      };
    });
    const gate = {
      open: new Promise<void>((resolve) => {
        open = resolve;
      }),
      reached: () => reached(),
    };
    const { supervisor, events, table } = setup({}, gate);
    const starting = supervisor.start().catch((e: unknown) => e);
    await bothUp;
    const stopping = supervisor.stop("SIGTERM");
    open();
    const outcome = await starting;
    await stopping;
    expect(outcome).toBeInstanceOf(MsbError);
    expect(events.some((e) => e.type === "spawned" && e.service === "control-plane")).toBe(false);
    for (const p of pidsOf(events))
      expect(isSameLiveProcess(table, p.pid, p.startTime)).toBe(false);
  });

  it("kills a service that ignores SIGTERM once its stop deadline passes", async () => {
    const { supervisor, events, table } = setup({ "control-plane": "stubborn" });
    await supervisor.start();
    await supervisor.stop("test");
    const exit = events.find((e) => e.type === "exited" && e.service === "control-plane");
    expect(exit).toMatchObject({ reason: "was killed by SIGKILL", expected: true });
    for (const p of pidsOf(events))
      expect(isSameLiveProcess(table, p.pid, p.startTime)).toBe(false);
  });
});

describe("parent guard", () => {
  // The window PDEATHSIG leaves open: a supervisor that dies between fork and the prctl. The
  // preload runs after the prctl; a parent that is not the named supervisor means it is gone.
  const run = (supervisor: string) => {
    const child = spawn(
      process.execPath,
      ["--require", PARENT_GUARD, "-e", "console.log('serving'); setInterval(() => {}, 1000)"],
      { env: { ...process.env, MSB_SUPERVISOR: supervisor }, stdio: ["ignore", "pipe", "pipe"] },
    );
    const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));
    const served = new Promise<boolean>((resolve) => {
      child.stdout.once("data", () => resolve(true));
      void exited.then(() => resolve(false));
    });
    return { child, exited, served };
  };

  it("exits a service whose supervisor is not its parent before it serves anything", async () => {
    const orphan = run("1:0");
    expect(await orphan.served).toBe(false);
    expect(await orphan.exited).toBe(75);
  });

  it("lets a service of a live supervisor run", async () => {
    const served = run(`${process.pid}:0`);
    expect(await served.served).toBe(true);
    served.child.kill("SIGKILL");
    await served.exited;
  });
});
