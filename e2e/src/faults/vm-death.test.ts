// A VM that dies under a running sandbox — QEMU SIGKILLed from the host, a guest kernel panic —
// is detected by itself within a few seconds (the database says `failed` with the reason,
// without anyone calling the sandbox), a call in flight ends with a coded error instead of
// hanging, the next call gets SANDBOX_STOPPED "sandbox stopped: <reason>" (docs/errors.md),
// and the same name starts again. Real VMs under TCG.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  SOAK,
  accountFor,
  call,
  dbSandbox,
  isAlive,
  isCodedError,
  ok,
  qemuOf,
  sh,
  startFaultServer,
  textOf,
  waitUntil,
  type FaultServer,
  type RpcAnswer,
} from "./fault-harness.js";

let server: FaultServer;

beforeAll(async () => {
  server = await startFaultServer();
}, 900_000);

afterAll(async () => {
  await server.dispose();
});

/** Generous: "within a few seconds" on a loaded 2-core box running TCG guests. */
const DETECT_BOUND_MS = 15_000;

async function startPython(name: string): Promise<number> {
  await ok(server.url, "sandbox.start", {
    sandbox: name,
    config: { image: "microsandbox/python", memory: 256 },
  });
  const r = await ok<{ output: { stream: string; text: string }[] }>(
    server.url,
    "sandbox.repl.run",
    { sandbox: name, language: "python", code: "print(6*7)" },
  );
  expect(textOf(r, "stdout")).toBe("42");
  // The sandbox's QEMU by its pidfile: a VM claimed from the warm pool was started under the
  // pool's directory, so its argv does not name the sandbox.
  const own = Number(
    readFileSync(join(server.home, "sandboxes", "default", name, "qemu.pid"), "utf8").trim(),
  );
  const pid = qemuOf(server.home).find((p) => p === own);
  expect(pid).toBeDefined();
  return pid!;
}

/** ms from `t0` until the database — read directly, no call to the server — says failed. */
async function detected(name: string, t0: number): Promise<number> {
  await waitUntil(
    () => dbSandbox(server.home, name)?.state === "failed",
    `the database to mark ${name} failed`,
    60_000,
  );
  return Date.now() - t0;
}

async function expectStoppedError(name: string, reason: RegExp): Promise<RpcAnswer> {
  const next = await call(
    server.url,
    "sandbox.repl.run",
    { sandbox: name, language: "python", code: "1" },
    30_000,
  );
  expect(next.error?.code).toBe(-32004);
  expect(next.error?.data?.code).toBe("SANDBOX_STOPPED");
  expect(next.error?.message).toMatch(/sandbox stopped: /);
  expect(next.error?.message).toMatch(reason);
  expect(next.error?.message).toContain("sandbox.start");
  return next;
}

describe("VM death detection", () => {
  it("QEMU killed with SIGKILL from the host, no call running: the database learns it on its own", async () => {
    const rounds = SOAK ? 5 : 1;
    for (let round = 1; round <= rounds; round += 1) {
      const qemu = await startPython("idle");
      const t0 = Date.now();
      process.kill(qemu, "SIGKILL");
      // Nobody calls the sandbox: only the control plane's own reconciliation can notice.
      const detectMs = await detected("idle", t0);
      const record = dbSandbox(server.home, "idle");
      console.log(
        `[faults] round ${round}: idle VM's QEMU SIGKILL detected after ${detectMs} ms; reason: ${record?.reason?.split("\n")[0]}`,
      );
      expect(detectMs).toBeLessThan(DETECT_BOUND_MS);
      expect(record?.error_code).toBe("VM_DIED");
      expect(record?.reason).toMatch(/SIGKILL/);
      await expectStoppedError("idle", /SIGKILL/);
      accountFor(server.home);
      await startPython("idle");
      accountFor(server.home);
    }
    await ok(server.url, "sandbox.stop", { sandbox: "idle" });
  });

  it("QEMU killed with SIGKILL during a call: the call ends with VM_DIED, not a REPL restart", async () => {
    const rounds = SOAK ? 5 : 1;
    for (let round = 1; round <= rounds; round += 1) {
      const qemu = await startPython("busy");
      const inflight = call(
        server.url,
        "sandbox.repl.run",
        { sandbox: "busy", language: "python", code: "import time; time.sleep(600)" },
        60_000,
      ).then((a) => ({ a, at: Date.now() }));
      // Let the cell reach the guest; nothing to await from outside.
      await new Promise((resolve) => setTimeout(resolve, 1_000));
      const t0 = Date.now();
      process.kill(qemu, "SIGKILL");
      const { a: flight, at } = await inflight;
      const detectMs = await detected("busy", t0);
      console.log(
        `[faults] round ${round}: in-flight call ended ${at - t0} ms after the SIGKILL: ${JSON.stringify(flight.error ?? flight.result).slice(0, 300)}`,
      );
      expect(detectMs).toBeLessThan(DETECT_BOUND_MS);
      expect(flight.error?.code).toBe(-32004);
      expect(flight.error?.data?.code).toBe("VM_DIED");
      expect(flight.error?.message).toMatch(/SIGKILL/);
      await expectStoppedError("busy", /SIGKILL/);
      accountFor(server.home);
    }
  });

  it("guest kernel panic: QEMU exits, the panic is the reason, the name starts again", async () => {
    // Our kernel has no magic SysRq (CONFIG_MAGIC_SYSRQ is not set in images/kernel), so the
    // panic comes from panic_on_oom=2: the next OOM, even a cgroup one, panics the kernel.
    const qemu = await startPython("panicky");
    const t0 = Date.now();
    const trigger = await sh(
      server.url,
      "panicky",
      "echo 2 > /proc/sys/vm/panic_on_oom && exec tail /dev/zero",
      120,
    );
    const detectMs = await detected("panicky", t0);
    const record = dbSandbox(server.home, "panicky");
    console.log(
      `[faults] guest panic: trigger call ended with ${trigger.error?.data?.code}, detected after ${detectMs} ms (from the trigger call); reason: ${record?.reason?.replace(/\n/g, " | ").slice(0, 400)}`,
    );
    expect(trigger.error).toBeDefined();
    expect(isCodedError(trigger)).toBe(true);
    expect(isAlive(qemu)).toBe(false);
    expect(record?.reason).toMatch(/Kernel panic/);
    await expectStoppedError("panicky", /Kernel panic/);
    accountFor(server.home);
    await startPython("panicky");
    const r = await sh(server.url, "panicky", "cat /proc/sys/vm/panic_on_oom");
    expect(textOf(r.result as { output: { stream: string; text: string }[] }).trim()).toBe("0");
    accountFor(server.home);
  });
});
