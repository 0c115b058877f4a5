// kill -9 of each service of a running `msb server`, and of the whole server, while a sandbox
// runs with a port forward (the seed's failure: leftover sandbox processes holding the port).
// After the supervisor restarts the service (or after `msb server start` again) everything
// under MSB_HOME and in /proc must be accounted for, the database must never say `running`
// for a VM that is gone, a new start of the same name must work and own its port. Real VMs.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { freePort } from "../server/harness.js";
import {
  SOAK,
  accountFor,
  call,
  dbSandbox,
  isAlive,
  listenerOf,
  ok,
  qemuOf,
  serverPids,
  startFaultServer,
  textOf,
  waitRestarted,
  waitUntil,
  type FaultServer,
} from "./fault-harness.js";

let server: FaultServer;
let hostPort = 0;
const NAME = "web";

beforeAll(async () => {
  server = await startFaultServer();
  hostPort = await freePort();
}, 900_000);

afterAll(async () => {
  await server.dispose();
});

async function startWeb(): Promise<void> {
  const started = await ok<string>(server.url, "sandbox.start", {
    sandbox: NAME,
    config: { image: "microsandbox/python", memory: 256, ports: [`${hostPort}:8000`] },
  });
  expect(started).toBe(`Sandbox ${NAME} started successfully`);
}

async function answers(): Promise<void> {
  const r = await ok<{ status: string; output: { stream: string; text: string }[] }>(
    server.url,
    "sandbox.repl.run",
    { sandbox: NAME, language: "python", code: "print(5*5)" },
  );
  expect(r.status).toBe("success");
  expect(textOf(r, "stdout")).toBe("25");
}

/** The database agrees with /proc: polled, since the control plane learns of a death by itself. */
async function settles(what: string): Promise<number> {
  const t0 = Date.now();
  let last: unknown;
  await waitUntil(
    () => {
      try {
        accountFor(server.home);
        return true;
      } catch (err) {
        last = err;
        return false;
      }
    },
    `everything under MSB_HOME to be accounted for after ${what}`,
    30_000,
  ).catch((err: Error) => {
    throw new Error(`${err.message}: ${(last as Error | undefined)?.message ?? ""}`);
  });
  return Date.now() - t0;
}

/** The sandbox's port is owned by its own QEMU, nothing stale. */
function portOwnedByItsQemu(): void {
  const qemus = qemuOf(server.home);
  expect(qemus).toHaveLength(1);
  expect(listenerOf(hostPort)).toBe(qemus[0]);
}

describe("kill -9 of a service while a sandbox runs", () => {
  const rounds = SOAK ? 3 : 1;
  for (const service of ["control-plane", "vmm-agent", "image-service"] as const) {
    it(`${service}: restarted by the supervisor; nothing unaccounted for; same name starts again`, async () => {
      for (let round = 1; round <= rounds; round += 1) {
        await startWeb();
        await answers();
        portOwnedByItsQemu();
        const vmBefore = qemuOf(server.home)[0]!;
        const victim = serverPids(server.home).services[service]!;
        process.kill(victim, "SIGKILL");
        await waitRestarted(server, service, victim);
        const settledMs = await settles(`kill -9 ${service}`);
        const record = dbSandbox(server.home, NAME);
        console.log(
          `[faults] round ${round}: kill -9 ${service} (pid ${victim}): settled in ${settledMs} ms; sandbox ${record?.state}${record?.reason ? ` (${record.reason.split("\n")[0]})` : ""}`,
        );
        if (record?.state === "running") {
          // Only a vmm-agent death takes the VMs with it; the others must not touch them.
          expect(qemuOf(server.home)).toEqual([vmBefore]);
          await answers();
        } else {
          expect(service).toBe("vmm-agent");
          expect(record?.state).toBe("failed");
          expect(record?.reason).toMatch(/vmm-agent/);
          expect(isAlive(vmBefore)).toBe(false);
          const next = await call(server.url, "sandbox.repl.run", {
            sandbox: NAME,
            language: "python",
            code: "1",
          });
          expect(next.error?.data?.code).toBe("SANDBOX_STOPPED");
          expect(next.error?.message).toContain("sandbox stopped: ");
          await startWeb();
          await answers();
        }
        portOwnedByItsQemu();
        accountFor(server.home);
      }
    });
  }

  it("the whole server (supervisor and services at once): `msb server start` again takes over cleanly", async () => {
    for (let round = 1; round <= rounds; round += 1) {
      await startWeb();
      await answers();
      const vm = qemuOf(server.home)[0]!;
      const { supervisor, services } = serverPids(server.home);
      for (const pid of [supervisor, ...Object.values(services)]) process.kill(pid, "SIGKILL");
      await server.current.exited;
      // QEMU dies with its vmm-agent (PDEATHSIG): no VM, and so no port, outlives the server.
      await waitUntil(() => !isAlive(vm), "the VM to die with its vmm-agent", 15_000);
      // The kernel closes a killed process's sockets as it tears it down: a moment, not never.
      const t0 = Date.now();
      await waitUntil(
        () => listenerOf(hostPort) === undefined && listenerOf(server.port) === undefined,
        "the API port and the sandbox's forwarded port to be released",
        15_000,
      );
      console.log(`[faults] both ports free ${Date.now() - t0} ms after the VM was gone`);

      await server.restart();
      expect(listenerOf(server.port)).toBe(serverPids(server.home).services["control-plane"]);
      const settledMs = await settles("kill -9 of the whole server");
      const record = dbSandbox(server.home, NAME);
      console.log(
        `[faults] round ${round}: kill -9 whole server: settled in ${settledMs} ms after restart; sandbox ${record?.state} (${record?.reason ?? ""})`,
      );
      expect(record?.state).toBe("failed");
      expect(record?.reason).toMatch(/VM lost while the control plane was down/);
      await startWeb();
      await answers();
      portOwnedByItsQemu();
      accountFor(server.home);
    }
  });
});
