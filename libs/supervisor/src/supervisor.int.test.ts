import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createLogger } from "@msb/runtime";
import { afterEach, describe, expect, it } from "vitest";
import { MsbError } from "@msb/errors";
import { createProcfsTable, isSameLiveProcess } from "./proc.js";
import { waitForSocket } from "./readiness.js";
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

function setup(modes: Record<string, string>) {
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
      ready: (signal) => waitForSocket(socket, signal),
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
