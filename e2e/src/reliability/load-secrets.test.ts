import { createHash } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  freePort,
  msb,
  processesMentioning,
  startForeground,
  tempHome,
  type ForegroundServer,
} from "../server/harness.js";

/**
 * One real server (real QEMU VMs under TCG) for three properties that need VMs:
 * load (concurrent mixed JSON-RPC calls over several sandboxes, each answered exactly once),
 * capacity (a start beyond MSB_MAX_VMS fails fast with CAPACITY_EXHAUSTED while the running
 * sandboxes keep answering), and secrets (the API key and the server secret never reach logs
 * at debug level, any process's argv, error messages, or the guest).
 *
 * MSB_SOAK=1 (npm run soak) sends more requests for more rounds.
 */

const SOAK = process.env["MSB_SOAK"] === "1";
const SANDBOXES = ["load-a", "load-b", "load-c"];
const REQUESTS = SOAK ? 600 : 200;
const ROUNDS = SOAK ? 5 : 1;
/** Long and recognisable: a leak is found by plain substring search. */
const SERVER_KEY = `robust-server-secret-${createHash("sha256").update(String(process.pid)).digest("hex").slice(0, 24)}`;

interface RpcAnswer {
  readonly status: number;
  readonly text: string;
  readonly body: {
    id?: unknown;
    result?: unknown;
    error?: { code: number; message: string; data?: { code?: string } };
  };
}

describe("a real server under load, at capacity, and with secrets", () => {
  const home = tempHome();
  let server: ForegroundServer;
  let url = "";
  let apiKey = "";
  const answersSeen: string[] = [];

  const call = async (
    method: string,
    params: unknown,
    id: string | number,
    key = apiKey,
  ): Promise<RpcAnswer> => {
    const res = await fetch(`${url}/api/v1/rpc`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${key}` },
      body: JSON.stringify({ jsonrpc: "2.0", method, params, id }),
    });
    const text = await res.text();
    answersSeen.push(text);
    return { status: res.status, text, body: JSON.parse(text) as RpcAnswer["body"] };
  };

  beforeAll(async () => {
    const port = await freePort();
    server = startForeground(home.path, ["--port", String(port), "--key", SERVER_KEY], {
      MSB_LOG_LEVEL: "debug",
      MSB_MAX_VMS: String(SANDBOXES.length),
    });
    await server.ready;
    url = `http://127.0.0.1:${port}`;
    const keygen = await msb(home.path, ["--json", "server", "keygen"], {
      MSB_SERVER_KEY: SERVER_KEY,
    });
    expect(keygen.code, keygen.stderr).toBe(0);
    apiKey = (JSON.parse(keygen.stdout) as { key: string }).key;
    const started = await Promise.all(
      SANDBOXES.map((sandbox, i) =>
        call(
          "sandbox.start",
          { sandbox, config: { image: "microsandbox/python", memory: 256, timeout: 600 } },
          `start-${i}`,
        ),
      ),
    );
    for (const s of started) expect(s.body.error, s.text).toBeUndefined();
  });

  afterAll(async () => {
    await msb(home.path, ["server", "stop"]);
    if (server.child.exitCode === null) server.child.kill("SIGKILL");
    home.remove();
  });

  it(`answers ${REQUESTS} concurrent mixed calls over ${SANDBOXES.length} sandboxes, each exactly once`, async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const kinds = ["repl", "command", "metrics", "write", "read"] as const;
      const requests = Array.from({ length: REQUESTS }, (_, i) => {
        const sandbox = SANDBOXES[i % SANDBOXES.length]!;
        const kind = kinds[i % kinds.length]!;
        const token = `r${round}-q${i}`;
        const id = i % 2 === 0 ? token : round * 100_000 + i;
        switch (kind) {
          case "repl":
            return {
              id,
              token,
              kind,
              method: "sandbox.repl.run",
              params: { sandbox, language: "python", code: `print("${token}")` },
            };
          case "command":
            return {
              id,
              token,
              kind,
              method: "sandbox.command.run",
              params: { sandbox, command: "echo", args: [token] },
            };
          case "metrics":
            return { id, token, kind, method: "sandbox.metrics.get", params: { sandbox } };
          case "write":
            return {
              id,
              token,
              kind,
              method: "sandbox.files.write",
              params: {
                sandbox,
                path: `/tmp/${token}`,
                data: Buffer.from(token).toString("base64"),
              },
            };
          case "read":
            // Reads what an earlier request of this round wrote (or FILE_NOT_FOUND if it has not yet).
            return {
              id,
              token,
              kind,
              method: "sandbox.files.read",
              params: { sandbox, path: `/tmp/r${round}-q${i - 1}` },
            };
        }
      });
      const t0 = Date.now();
      const answers = await Promise.all(requests.map((r) => call(r.method, r.params, r.id)));
      const seconds = (Date.now() - t0) / 1000;
      const byId = new Map<string, number>();
      const failures: string[] = [];
      answers.forEach((a, i) => {
        const r = requests[i]!;
        byId.set(JSON.stringify(a.body.id), (byId.get(JSON.stringify(a.body.id)) ?? 0) + 1);
        if (JSON.stringify(a.body.id) !== JSON.stringify(r.id))
          failures.push(`${r.token}: id ${JSON.stringify(a.body.id)}`);
        const err = a.body.error;
        if (err !== undefined) {
          if (!(r.kind === "read" && err.data?.code === "FILE_NOT_FOUND"))
            failures.push(`${r.token}: ${a.text.slice(0, 300)}`);
          return;
        }
        if ((r.kind === "repl" || r.kind === "command") && !a.text.includes(r.token)) {
          failures.push(`${r.token}: output lacks its token: ${a.text.slice(0, 300)}`);
        }
      });
      console.log(
        `load round ${round}: ${REQUESTS} concurrent calls answered in ${seconds.toFixed(1)} s; errors: ${failures.length}`,
      );
      expect(failures).toEqual([]);
      expect([...byId.values()].every((n) => n === 1)).toBe(true);
      expect(byId.size).toBe(REQUESTS);
    }
  });

  it("refuses a start beyond MSB_MAX_VMS with CAPACITY_EXHAUSTED, while the running sandboxes keep answering", async () => {
    const t0 = Date.now();
    const [over, running] = await Promise.all([
      call(
        "sandbox.start",
        { sandbox: "one-too-many", config: { image: "microsandbox/python", memory: 256 } },
        "over",
      ),
      call(
        "sandbox.command.run",
        { sandbox: SANDBOXES[0], command: "echo", args: ["still-here"] },
        "still",
      ),
    ]);
    const seconds = (Date.now() - t0) / 1000;
    console.log(`capacity: refused in ${seconds.toFixed(1)} s (the boot timeout is 60 s)`);
    expect(over.status).toBe(503);
    expect(over.body.error).toMatchObject({ code: -32032, data: { code: "CAPACITY_EXHAUSTED" } });
    expect(over.body.error?.message).toMatch(/MSB_MAX_VMS|Stop a sandbox/);
    expect(running.text).toContain("still-here");
    // Refused, not left half-started: metrics does not list it as running.
    const metrics = await call("sandbox.metrics.get", { namespace: "*" }, "m");
    const listed = (metrics.body.result as { sandboxes: { name: string; running: boolean }[] })
      .sandboxes;
    expect(
      listed
        .filter((s) => s.running)
        .map((s) => s.name)
        .sort(),
    ).toEqual([...SANDBOXES].sort());
  });

  it("keeps the API key and the server secret out of argv, the guest, error messages and debug logs", async () => {
    const derived = createHash("sha256").update(SERVER_KEY).digest("hex");
    const secrets = {
      "API key": apiKey,
      "server key": SERVER_KEY,
      "API key signature": apiKey.split(".")[1]!,
    };

    // The guest: environment of a command, and the kernel command line.
    const env = await call("sandbox.command.run", { sandbox: SANDBOXES[0], command: "env" }, "env");
    const cmdline = await call(
      "sandbox.command.run",
      { sandbox: SANDBOXES[0], command: "cat", args: ["/proc/cmdline"] },
      "cmdline",
    );
    expect(env.text).toContain("PATH=");
    expect(cmdline.text).toMatch(/console=|root=|init=/);

    // Error answers to near-miss keys.
    const tampered = apiKey.slice(0, -3) + (apiKey.endsWith("A") ? "BBB" : "AAA");
    const refused = await call("sandbox.metrics.get", {}, "bad", tampered);
    expect(refused.body.error?.data?.code).toBe("AUTH_INVALID");

    // Every process of this machine (msb CLI, control plane, vmm-agent, image-service, QEMU).
    const qemu = processesMentioning("qemu-system");
    expect(qemu.length).toBeGreaterThan(0);
    for (const [what, secret] of Object.entries(secrets)) {
      expect(processesMentioning(secret), `${what} in some /proc/*/cmdline`).toEqual([]);
      for (const answer of answersSeen)
        expect(answer.includes(secret), `${what} in an answer`).toBe(false);
    }
    expect(processesMentioning(derived), "derived server secret in argv").toEqual([]);

    // Logs at debug level, after a full start → run → stop.
    await msb(home.path, ["server", "stop"]);
    const logsDir = join(home.path, "logs");
    const files = readdirSync(logsDir);
    expect(files.length).toBeGreaterThan(0);
    let debugLines = 0;
    for (const f of files) {
      const text = readFileSync(join(logsDir, f), "utf8");
      debugLines += text.split("\n").filter((l) => l.includes('"level":20')).length;
      for (const [what, secret] of Object.entries({ ...secrets, derived })) {
        expect(text.includes(secret), `${what} in ${f}`).toBe(false);
      }
    }
    console.log(
      `secrets: ${files.length} log files, ${debugLines} debug lines, ${answersSeen.length} answers checked`,
    );
    expect(debugLines).toBeGreaterThan(0);
  });
});

describe("a real server whose VM memory budget is exhausted", () => {
  const home = tempHome();
  let server: ForegroundServer;
  afterAll(async () => {
    await msb(home.path, ["server", "stop"]);
    if (server.child.exitCode === null) server.child.kill("SIGKILL");
    home.remove();
  });

  it("refuses a start that does not fit with CAPACITY_EXHAUSTED before any boot", async () => {
    const port = await freePort();
    // 1 % of this host's memory is less than the 4 GiB asked for below on any test machine
    // with under 400 GiB of RAM.
    server = startForeground(home.path, ["--dev", "--port", String(port)], {
      MSB_VM_MEMORY_PERCENT: "1",
    });
    await server.ready;
    const t0 = Date.now();
    const res = await fetch(`http://127.0.0.1:${port}/api/v1/rpc`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        jsonrpc: "2.0",
        method: "sandbox.start",
        params: { sandbox: "big", config: { image: "microsandbox/python", memory: 4096 } },
        id: "big",
      }),
    });
    const body = (await res.json()) as RpcAnswer["body"];
    console.log(`memory budget: refused in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    expect(res.status).toBe(503);
    expect(body.error).toMatchObject({ code: -32032, data: { code: "CAPACITY_EXHAUSTED" } });
    expect(body.error?.message).toMatch(/Not enough memory.*MSB_VM_MEMORY_PERCENT/);
    // No VM was booted for it.
    const ours = processesMentioning("qemu-system").filter((p) => {
      try {
        return readFileSync(`/proc/${p.pid}/cmdline`, "utf8").includes(home.path);
      } catch {
        return false;
      }
    });
    expect(ours).toEqual([]);
  });
});
