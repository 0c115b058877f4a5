// kill -9 of a whole `msb server` (supervisor and services at once), then `msb server start`
// for the same MSB_HOME at once: a start whose lock holder is dead takes over what it left
// (identified by pid + start time and MSB_HOME), and no service outlives its supervisor.
// Real services, no VM.
import { existsSync, readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  freePort,
  isAlive,
  msb,
  processesMentioning,
  readLock,
  tempHome,
  waitUntil,
} from "./harness.js";

let home: { path: string; remove(): void };
let port = 0;
const ROUNDS = 3;

beforeAll(async () => {
  home = tempHome();
  port = await freePort();
});

afterAll(async () => {
  await msb(home.path, ["server", "stop"]);
  for (const pid of processesOfHome()) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      // Gone.
    }
  }
  home.remove();
});

const start = () =>
  msb(home.path, [
    "--json",
    "server",
    "start",
    "--dev",
    "--no-build",
    "--detach",
    "--port",
    String(port),
  ]);

/** Live processes whose command line mentions this home or whose environment has it as MSB_HOME. */
function processesOfHome(): number[] {
  const env = `MSB_HOME=${home.path}\0`;
  const pids = new Set(processesMentioning(home.path).map((p) => p.pid));
  for (const name of readdirSync("/proc").filter((n) => /^\d+$/.test(n))) {
    try {
      if (`${readFileSync(`/proc/${name}/environ`, "utf8")}\0`.includes(env))
        pids.add(Number(name));
    } catch {
      // Gone.
    }
  }
  return [...pids].filter((pid) => pid !== process.pid && isAlive(pid));
}

function treeOf(): number[] {
  const lock = readLock(home.path);
  return [lock.pid, ...Object.values(lock.services).map((s) => s.pid)];
}

describe("a start after kill -9 of the whole server", () => {
  it("takes over a control plane its dead supervisor left holding the port", async () => {
    const first = await start();
    expect(first.code, first.stderr).toBe(0);
    const lock = readLock(home.path);
    const cp = lock.services["control-plane"]!.pid;
    // The control plane outlives its supervisor (frozen, so PDEATHSIG cannot act on it): the
    // state `kill -9` of the whole tree left one run in three.
    process.kill(cp, "SIGSTOP");
    for (const pid of treeOf().filter((p) => p !== cp)) process.kill(pid, "SIGKILL");
    await waitUntil(() => !isAlive(lock.pid), "the supervisor to die");
    expect(isAlive(cp)).toBe(true);

    const again = await start();
    expect(again.code, again.stderr).toBe(0);
    expect(isAlive(cp)).toBe(false);
    expect(readLock(home.path).services["control-plane"]!.pid).not.toBe(cp);
  });

  it(`leaves no service behind and starts again at once, ${ROUNDS} rounds`, async () => {
    if (!existsSync(join(home.path, "run", "server.lock")) || !isAlive(readLock(home.path).pid)) {
      const first = await start();
      expect(first.code, first.stderr).toBe(0);
    }
    for (let round = 1; round <= ROUNDS; round += 1) {
      const tree = treeOf();
      for (const pid of tree) process.kill(pid, "SIGKILL");
      const again = await start();
      expect(again.code, `round ${round}: ${again.stderr}`).toBe(0);
      for (const pid of tree) expect(isAlive(pid), `round ${round}: pid ${pid}`).toBe(false);
      const now = treeOf();
      // Every process that mentions this home is the new server's.
      const strays = processesOfHome().filter((pid) => !now.includes(pid));
      expect(strays, `round ${round}`).toEqual([]);
    }
  });
});
