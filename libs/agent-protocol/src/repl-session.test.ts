import { afterEach, describe, expect, it } from "vitest";
import { AgentClient } from "./client.js";
import { FrameKind } from "./frame.js";
import { ReplSession } from "./repl-session.js";
import { FakeAgent, duplexPair } from "./test-support/fake-agent.js";

let clients: AgentClient[] = [];
afterEach(() => {
  for (const c of clients) c.close();
  clients = [];
});

function setup(
  argv = ["repl"],
  opts: { maxOutputBytes?: number; startTimeoutMs?: number } = {},
): { repl: ReplSession; agent: FakeAgent } {
  const [host, guest] = duplexPair();
  const agent = new FakeAgent(guest);
  const client = new AgentClient(host);
  clients.push(client);
  agent.sendHello();
  return {
    repl: new ReplSession(client, { language: "python", argv, interruptGraceMs: 50, ...opts }),
    agent,
  };
}

describe("ReplSession", () => {
  it("runs cells and returns their output", async () => {
    const { repl } = setup();
    const r = await repl.run("hello\n");
    expect(r).toMatchObject({
      status: "success",
      output: [{ stream: "stdout", text: "hello\n" }],
      truncated: false,
      restarted: false,
    });
    expect((await repl.run("again")).output).toEqual([{ stream: "stdout", text: "again" }]);
  });

  it("reports an exception with its traceback on stderr", async () => {
    const { repl } = setup();
    const r = await repl.run("boom");
    expect(r.status).toBe("error");
    expect(r.error).toMatchObject({ type: "ValueError", message: "boom" });
    expect(r.output).toEqual([{ stream: "stderr", text: "Traceback: boom\n" }]);
  });

  it("interrupts a cell on timeout and keeps the interpreter when it stops", async () => {
    const { repl } = setup();
    const r = await repl.run("hang", { timeoutMs: 30 });
    expect(r).toMatchObject({
      status: "timeout",
      restarted: false,
      error: { type: "TimeoutError" },
    });
    expect((await repl.run("next")).status).toBe("success");
  });

  it("kills and restarts an interpreter that ignores the interrupt, and says so", async () => {
    const { repl } = setup();
    const r = await repl.run("stuck", { timeoutMs: 30 });
    expect(r).toMatchObject({ status: "timeout", restarted: true });
    expect(r.error?.message).toMatch(/restarted/);
    expect(await repl.run("after")).toMatchObject({
      status: "success",
      output: [{ stream: "stdout", text: "after" }],
    });
  });

  it("restarts after the interpreter dies mid-cell", async () => {
    const { repl } = setup();
    const r = await repl.run("die");
    expect(r).toMatchObject({ status: "error", restarted: true, error: { type: "ReplDied" } });
    expect((await repl.run("ok")).status).toBe("success");
  });

  it("caps output per call and reports truncation", async () => {
    const { repl } = setup(["repl"], { maxOutputBytes: 10 });
    const r = await repl.run("x".repeat(100));
    expect(r.truncated).toBe(true);
    expect(r.output).toEqual([{ stream: "stdout", text: "x".repeat(10) }]);
  });

  it("fails to start with a clear error when the interpreter is missing", async () => {
    const { repl } = setup(["python3-missing"]);
    await expect(repl.run("1")).rejects.toMatchObject({
      code: "INVALID_PARAMS",
      message: /was not found/,
    });
  });

  it("says the REPL could not start when the interpreter exits before it is ready", async () => {
    const { repl } = setup(["echo"]);
    await expect(repl.start()).rejects.toMatchObject({
      code: "REPL_START_FAILED",
      message: /could not start: exited before it was ready/,
    });
  });

  it("gives up on a driver that never says it is ready", async () => {
    const { repl } = setup(["silent-repl"], { startTimeoutMs: 30 });
    await expect(repl.start()).rejects.toMatchObject({ code: "AGENT_TIMEOUT" });
  });

  it("runs queued cells one at a time, in order", async () => {
    const { repl } = setup();
    const [a, b] = await Promise.all([repl.run("a"), repl.run("b")]);
    expect(a.output[0]?.text).toBe("a");
    expect(b.output[0]?.text).toBe("b");
  });
});

describe("ReplSession.adopt (snapshot restore)", () => {
  it("takes over a driver that kept running across a reconnect", async () => {
    const { repl, agent } = setup();
    await repl.run("warm");
    const stream = repl.stream;
    expect(stream).toBeGreaterThan(0);

    const [host, guest] = duplexPair();
    const client = new AgentClient(host);
    clients.push(client);
    agent.reconnect(guest);
    expect((await client.waitHello()).streams).toEqual([stream]);

    const adopted = new ReplSession(client, { language: "python", argv: ["repl"] });
    adopted.adopt(stream!);
    const r = await adopted.run("after", { hidden: true });
    expect(r).toMatchObject({ status: "success", output: [{ stream: "stdout", text: "after" }] });
    const cell = agent.received
      .filter((f) => f.kind === FrameKind.CTRL_IN)
      .map((f) => JSON.parse(f.payload.toString()) as Record<string, unknown>)
      .pop();
    expect(cell).toMatchObject({ code: "after", hidden: true });
    // No second interpreter was started: the only exec was the first session's.
    const execs = agent.received.filter(
      (f) => f.kind === FrameKind.REQUEST && f.payload.toString().includes('"exec"'),
    );
    expect(execs).toHaveLength(1);
  });

  it("refuses a stream the agent did not list in its HELLO", async () => {
    const { agent } = setup();
    const [host, guest] = duplexPair();
    const client = new AgentClient(host);
    clients.push(client);
    agent.reconnect(guest);
    await client.waitHello();
    const session = new ReplSession(client, { language: "python" });
    expect(() => session.adopt(7)).toThrow(/not a running process/);
  });
});
