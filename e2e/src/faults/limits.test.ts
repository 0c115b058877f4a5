// Limits inside a real guest: a memory hog is OOM-killed (user code, never the agent) and the
// host QEMU stays within the VM's memory plus overhead; fork bombs (plain and backgrounded) hit
// the pids limit and the sandbox keeps answering; filling the disk stops at the quota with
// ENOSPC and the sandbox works again once the file is gone; a CPU hog in one sandbox does not
// stop another from answering; endless output is capped and reported as truncated.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  SOAK,
  call,
  ok,
  qemuOf,
  sh,
  startFaultServer,
  textOf,
  type CommandResult,
  type FaultServer,
  type RpcAnswer,
  waitUntil,
} from "./fault-harness.js";

const MEMORY_MIB = 256;
const DISK_QUOTA_MIB = 64;
/** Host RSS a VM may use beyond its guest RAM: QEMU itself, TCG's translation cache, buffers. */
const QEMU_OVERHEAD_MIB = 256;

let server: FaultServer;

beforeAll(async () => {
  server = await startFaultServer({ MSB_DEFAULT_DISK_QUOTA_MIB: String(DISK_QUOTA_MIB) });
  for (const name of ["lim", "neighbour"]) {
    await ok(server.url, "sandbox.start", {
      sandbox: name,
      config: { image: "microsandbox/python", memory: MEMORY_MIB },
    });
  }
}, 900_000);

afterAll(async () => {
  await server.dispose();
});

function result(answer: RpcAnswer): CommandResult {
  if (answer.error !== undefined) throw new Error(JSON.stringify(answer.error).slice(0, 2000));
  return answer.result as CommandResult;
}

/** The sandbox answers both a command and its REPL (whose state survives). */
async function stillAnswers(name: string): Promise<void> {
  const echo = result(await sh(server.url, name, "echo alive", 60));
  expect(echo.exit_code).toBe(0);
  expect(textOf(echo, "stdout")).toBe("alive");
  const r = await ok<{ status: string; output: { stream: string; text: string }[] }>(
    server.url,
    "sandbox.repl.run",
    { sandbox: name, language: "python", code: "print(7*6)", timeout: 60 },
  );
  expect(r.status).toBe("success");
  expect(textOf(r, "stdout")).toBe("42");
}

function qemuRssMib(name: string): number {
  // By the sandbox's pidfile: a VM claimed from the warm pool has the pool's directory in argv.
  const own = Number(
    readFileSync(join(server.home, "sandboxes", "default", name, "qemu.pid"), "utf8").trim(),
  );
  const pid = qemuOf(server.home).find((p) => p === own);
  if (pid === undefined) throw new Error(`no QEMU for ${name}`);
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1];
  return Number(kb) / 1024;
}

/** `bash -c SCRIPT`: dash (sh) rejects `:` as a function name, so the classic bomb needs bash. */
function bash(name: string, script: string, timeout: number): Promise<RpcAnswer> {
  return call(server.url, "sandbox.command.run", {
    sandbox: name,
    command: "bash",
    args: ["-c", script],
    timeout,
  });
}

/** The guest's OOM-kill counter for user code (cgroup v2, hierarchical). */
async function oomKills(name: string): Promise<number> {
  const r = result(await sh(server.url, name, "cat /sys/fs/cgroup/msb/memory.events", 60));
  return Number(/^oom_kill (\d+)$/m.exec(textOf(r, "stdout"))?.[1] ?? "NaN");
}

describe("limits inside the guest", () => {
  it("memory hog: the guest OOM killer takes user code, the sandbox answers, host RSS stays bounded", async () => {
    const rounds = SOAK ? 3 : 1;
    await ok(server.url, "sandbox.repl.run", {
      sandbox: "lim",
      language: "python",
      code: "kept = 'state before the hog'",
    });
    for (let round = 1; round <= rounds; round += 1) {
      const before = await oomKills("lim");
      // `tail /dev/zero` buffers an endless line: it grows until something stops it.
      const hog = result(await sh(server.url, "lim", "tail /dev/zero", 120));
      const after = await oomKills("lim");
      const rss = qemuRssMib("lim");
      console.log(
        `[faults] round ${round}: memory hog ended with exit ${hog.exit_code}, oom_kill ${before} → ${after}, host QEMU RSS ${rss.toFixed(0)} MiB (VM ${MEMORY_MIB} MiB + ${QEMU_OVERHEAD_MIB} MiB allowed)`,
      );
      expect(hog.exit_code).toBe(137); // SIGKILL from the OOM killer
      expect(after).toBeGreaterThan(before);
      expect(rss).toBeLessThanOrEqual(MEMORY_MIB + QEMU_OVERHEAD_MIB);
      await stillAnswers("lim");
    }
    const kept = await ok<{ output: { stream: string; text: string }[] }>(
      server.url,
      "sandbox.repl.run",
      { sandbox: "lim", language: "python", code: "print(kept)" },
    );
    expect(textOf(kept, "stdout")).toBe("state before the hog");
  });

  it("fork bomb (it backgrounds itself): the pids limit holds, the agent answers, the bomb is killed, execs work", async () => {
    const rounds = SOAK ? 3 : 1;
    for (let round = 1; round <= rounds; round += 1) {
      // `:(){ :|:& };:` returns at once: the bomb outlives its exec by construction. The second
      // form backgrounds even the first call.
      const script = round % 2 === 1 ? ":(){ :|:& };:" : ":(){ :|:& };: &";
      const t0 = Date.now();
      const bomb = result(await bash("lim", script, 20));
      expect(bomb.exit_code).toBe(0);
      await stillAnswers("lim");
      // Each exec lets the agent sweep leftovers: a leftover that ran into its pids limit is a
      // fork bomb and is killed. Without that, the bomb holds ~all pids and CPU for good.
      let pids = "";
      let peak = 0;
      await waitUntil(
        async () => {
          const r = result(await sh(server.url, "lim", "cat /sys/fs/cgroup/msb/pids.current", 60));
          pids = textOf(r, "stdout").trim();
          peak = Math.max(peak, Number(pids));
          return Number(pids) < 20;
        },
        "the fork bomb to be gone",
        120_000,
      );
      const max = textOf(
        result(await sh(server.url, "lim", "cat /sys/fs/cgroup/msb/pids.max", 60)),
        "stdout",
      );
      console.log(
        `[faults] round ${round}: fork bomb '${script}': peak ${peak} user pids seen (user limit ${max.trim()}, half of it per exec), gone after ${Date.now() - t0} ms; user pids now ${pids}`,
      );
      await stillAnswers("lim");
    }
    // A well-behaved background process of a finished exec is left alone.
    result(await sh(server.url, "lim", "nohup sleep 300 >/dev/null 2>&1 &", 60));
    result(await sh(server.url, "lim", "true", 60));
    const sleeping = result(
      await sh(server.url, "lim", "pgrep -x sleep || ps -eo comm | grep -x sleep", 60),
    );
    expect(textOf(sleeping, "stdout").trim()).not.toBe("");
  });

  it("disk fill: ENOSPC at the quota, and the sandbox works again after the file is deleted", async () => {
    const fill = result(
      await sh(server.url, "lim", "dd if=/dev/zero of=/tmp/fill bs=1M 2>&1; ls -l /tmp/fill", 180),
    );
    const out = textOf(fill);
    const size = Number(/\s(\d+)\s+\w{3}\s+\d+\s+[\d:]+\s+\/tmp\/fill/.exec(out)?.[1] ?? "NaN");
    console.log(
      `[faults] disk fill: ${(size / 1048576).toFixed(1)} MiB written before ENOSPC (quota ${DISK_QUOTA_MIB} MiB)`,
    );
    expect(out).toContain("No space left on device");
    expect(size).toBeLessThanOrEqual(DISK_QUOTA_MIB * 1048576);
    const freed = result(
      await sh(server.url, "lim", "rm /tmp/fill && echo x > /tmp/more && cat /tmp/more", 60),
    );
    expect(freed.exit_code).toBe(0);
    expect(textOf(freed, "stdout")).toBe("x");
    await stillAnswers("lim");
  });

  it("CPU hog in one sandbox: another sandbox's repl.run still answers (latency ratio printed)", async () => {
    const sample = async (n: number): Promise<number[]> => {
      const times: number[] = [];
      for (let i = 0; i < n; i += 1) {
        const t0 = performance.now();
        const r = await ok<{ status: string }>(server.url, "sandbox.repl.run", {
          sandbox: "neighbour",
          language: "python",
          code: "sum(range(1000))",
          timeout: 120,
        });
        expect(r.status).toBe("success");
        times.push(performance.now() - t0);
      }
      return times.sort((a, b) => a - b);
    };
    const median = (xs: number[]) => xs[Math.floor(xs.length / 2)]!;
    const n = SOAK ? 15 : 5;
    const idle = await sample(n);
    const hog = sh(server.url, "lim", "while :; do :; done", 15);
    // Let the hog reach the guest; there is nothing to await from outside.
    await new Promise((resolve) => setTimeout(resolve, 1_000));
    const loaded = await sample(n);
    const ended = await hog;
    console.log(
      `[faults] neighbour repl.run median: idle ${median(idle).toFixed(0)} ms, under a CPU hog ${median(loaded).toFixed(0)} ms, ratio ${(median(loaded) / median(idle)).toFixed(2)} (target ≤ 2; not asserted)`,
    );
    expect(ended.error?.data?.code).toBe("TIMEOUT");
    await stillAnswers("lim");
  });

  it("endless output: capped, truncation reported in the result, the sandbox answers", async () => {
    const big = result(await sh(server.url, "lim", "yes 0123456789 | head -c 20000000", 180));
    const text = textOf(big);
    console.log(
      `[faults] 20 MB of output: ${text.length} characters kept, truncated=${big.truncated}`,
    );
    expect(big.exit_code).toBe(0);
    expect(big.truncated).toBe(true);
    expect(text.length).toBeLessThanOrEqual(1024 * 1024 + 4096);
    expect(text).toContain("msb: output truncated");

    const endless = await sh(server.url, "lim", "yes", 5);
    expect(endless.error?.data?.code).toBe("TIMEOUT");
    const repl = await ok<{ status: string; truncated: boolean }>(server.url, "sandbox.repl.run", {
      sandbox: "lim",
      language: "python",
      code: "while True: print('x' * 100)",
      timeout: 5,
    });
    console.log(`[faults] endless REPL output: status ${repl.status}, truncated=${repl.truncated}`);
    expect(repl.status).toBe("timeout");
    expect(repl.truncated).toBe(true);
    await stillAnswers("lim");
  });
});
