import { MsbError } from "@msb/errors";
import { afterEach, describe, expect, it } from "vitest";
import { AgentClient } from "./client.js";
import type { OutputChunk } from "./types.js";
import { FrameKind, encodeFrame } from "./frame.js";
import { FakeAgent, duplexPair } from "./test-support/fake-agent.js";

let clients: AgentClient[] = [];
afterEach(() => {
  for (const c of clients) c.close();
  clients = [];
});

function setup(options: { hello?: boolean; requestTimeoutMs?: number } = {}): {
  client: AgentClient;
  agent: FakeAgent;
} {
  const [host, guest] = duplexPair();
  const agent = new FakeAgent(guest);
  const client = new AgentClient(host, { requestTimeoutMs: options.requestTimeoutMs ?? 5_000 });
  clients.push(client);
  if (options.hello ?? true) agent.sendHello();
  return { client, agent };
}

async function collect(
  it: AsyncIterable<OutputChunk>,
): Promise<{ stdout: string; stderr: string }> {
  let stdout = "";
  let stderr = "";
  for await (const c of it) {
    if (c.stream === "stdout") stdout += c.data.toString();
    else stderr += c.data.toString();
  }
  return { stdout, stderr };
}

describe("AgentClient", () => {
  it("reports the hello, with boot timings and errors", async () => {
    const { client } = setup();
    const hello = await client.waitHello();
    expect(hello).toMatchObject({ protocol: 1, ready: true, windowBytes: 262_144, bootErrors: [] });
    expect(hello.bootMs.total).toBe(530);
  });

  it("holds requests until the hello: nothing is written before the guest opened its port", async () => {
    const { client, agent } = setup({ hello: false });
    const ping = client.ping();
    await new Promise((r) => setTimeout(r, 20));
    expect(agent.received).toHaveLength(0);
    agent.sendHello();
    await expect(ping).resolves.toEqual({ uptimeMs: 1234 });
  });

  it("times out waiting for a hello with AGENT_TIMEOUT", async () => {
    const { client } = setup({ hello: false });
    await expect(client.waitHello({ timeoutMs: 30 })).rejects.toMatchObject({
      code: "AGENT_TIMEOUT",
    });
  });

  it("rejects an incompatible protocol version", async () => {
    const { client, agent } = setup({ hello: false });
    const hello = client.waitHello();
    agent.sendHello({ protocol: 2 });
    await expect(hello).rejects.toMatchObject({ code: "AGENT_PROTOCOL_ERROR" });
  });

  it("runs simple ops", async () => {
    const { client } = setup();
    expect(await client.metrics()).toMatchObject({
      cpuPct: 12.5,
      memUsedBytes: 40,
      diskUsedBytes: 10,
      procs: 3,
    });
    expect(
      await client.configure({ hostname: "box", env: { A: "1" }, entropy: new Uint8Array(16) }),
    ).toEqual({ errors: [] });
    expect((await client.listDir("/x")).entries[0]).toMatchObject({
      name: "a.txt",
      type: "file",
      mtimeMs: 1,
    });
    await expect(client.shutdown()).resolves.toBeUndefined();
  });

  it("maps agent errors to MsbError and keeps the agent code", async () => {
    const { client } = setup();
    const err = await client.readFile("/missing").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MsbError);
    expect(err).toMatchObject({
      code: "FILE_NOT_FOUND",
      details: { agentCode: "not_found", op: "read_file" },
    });
    await expect(client.exec({ argv: ["nope"] })).rejects.toMatchObject({
      details: { agentCode: "not_found" },
    });
  });

  it("execs with output as an async iterator, then the exit", async () => {
    const { client } = setup();
    const p = await client.exec({ argv: ["echo", "hi", "there"] });
    expect(p.pid).toBeGreaterThan(0);
    expect(await collect(p.output())).toEqual({ stdout: "hi there\n", stderr: "to stderr\n" });
    expect(await p.exit).toMatchObject({ exitCode: 0, signal: null, timedOut: false });
  });

  it("streams stdin to the process and closes it", async () => {
    const { client } = setup();
    const p = await client.exec({ argv: ["cat"], stdin: true });
    const out = collect(p.output());
    await p.writeStdin("abc");
    await p.writeStdin(Buffer.alloc(600_000, 0x61)); // larger than one window: waits for credit
    await p.closeStdin();
    expect((await out).stdout.length).toBe(600_003);
    expect((await p.exit).exitCode).toBe(0);
  });

  it("moves more output than one window through flow control", async () => {
    const { client } = setup();
    const r = await client.run(
      { argv: ["yes", String(3_000_000)] },
      { maxOutputBytes: 10_000_000 },
    );
    expect(r.stdout.length).toBe(3_000_000);
    expect(r.truncated).toBe(false);
  });

  it("caps collected output and says so", async () => {
    const { client } = setup();
    const r = await client.run({ argv: ["yes", String(500_000)] }, { maxOutputBytes: 1000 });
    expect(r.stdout.length).toBe(1000);
    expect(r.truncated).toBe(true);
    expect(r.exit.exitCode).toBe(0);
  });

  it("pauses an unread process at the high-water mark instead of buffering without bound", async () => {
    const { client, agent } = setup();
    const p = await client.exec(
      { argv: ["yes", String(2_000_000)] },
      { highWaterMarkBytes: 100_000 },
    );
    await new Promise((r) => setTimeout(r, 50));
    const delivered = agent.received
      .filter((f) => f.kind === FrameKind.WINDOW && f.stream === p.stream)
      .reduce((n, f) => n + f.payload.readUInt32BE(0), 0);
    expect(delivered).toBeLessThan(400_000);
    expect((await collect(p.output())).stdout.length).toBe(2_000_000);
  });

  it("cancels a process with an AbortSignal (SIGKILL to its group)", async () => {
    const { client } = setup();
    const ac = new AbortController();
    const p = await client.exec(
      { argv: ["sleep"] },
      { signal: ac.signal, onOutput: () => undefined },
    );
    ac.abort();
    expect(await p.exit).toMatchObject({ signal: 9, exitCode: 137 });
  });

  it("reads and writes files", async () => {
    const { client, agent } = setup();
    const big = Buffer.alloc(700_000, 7);
    expect(await client.writeFile("/data/a.bin", big, { mkdirs: true })).toEqual({
      bytes: 700_000,
    });
    expect(agent.files.get("/data/a.bin")?.equals(big)).toBe(true);
    const r = await client.readFile("/data/a.bin");
    expect(r.data.equals(big)).toBe(true);
    expect(r.truncated).toBe(false);
    const part = await client.readFile("/data/a.bin", { maxBytes: 10 });
    expect(part).toMatchObject({ size: 700_000, truncated: true });
    expect(part.data.length).toBe(10);
  });

  it("fails every outstanding call with AGENT_DISCONNECTED when the connection drops", async () => {
    const { client, agent } = setup();
    const p = await client.exec({ argv: ["sleep"] }, { onOutput: () => undefined });
    const write = client.writeFile("/x", "never finished");
    agent.io.destroy();
    await expect(p.exit).rejects.toMatchObject({ code: "AGENT_DISCONNECTED" });
    await expect(write).rejects.toMatchObject({ code: "AGENT_DISCONNECTED" });
    await expect(client.ping()).rejects.toMatchObject({ code: "AGENT_DISCONNECTED" });
  });

  it("times out a request that gets no answer and ignores the late answer", async () => {
    const { client, agent } = setup();
    agent.io.removeAllListeners("data"); // the agent stops answering
    await expect(client.ping({ timeoutMs: 20 })).rejects.toMatchObject({ code: "AGENT_TIMEOUT" });
    agent.send(FrameKind.RESPONSE, 1, { pong: true, uptime_ms: 1 }); // late
    await new Promise((r) => setTimeout(r, 10));
    expect(client.closedReason).toBeUndefined();
  });

  it.each([
    [
      "an oversize frame",
      () => {
        const b = Buffer.alloc(9);
        b.writeUInt32BE(0x7fff_ffff);
        return b;
      },
    ],
    ["a host-only kind", () => encodeFrame(FrameKind.REQUEST, 1, "{}")],
    ["a non-JSON hello", () => encodeFrame(FrameKind.HELLO, 0, "not json")],
    [
      "a fatal ERROR frame",
      () => encodeFrame(FrameKind.ERROR, 0, '{"error":{"code":"bad_frame_length","message":"x"}}'),
    ],
  ])(
    "resets the connection on %s and fails calls with AGENT_PROTOCOL_ERROR",
    async (_name, bytes) => {
      const { client, agent } = setup();
      await client.waitHello();
      const p = await client.exec({ argv: ["sleep"] }, { onOutput: () => undefined });
      agent.raw(bytes());
      await expect(p.exit).rejects.toMatchObject({ code: "AGENT_PROTOCOL_ERROR" });
      expect(client.closedReason?.code).toBe("AGENT_PROTOCOL_ERROR");
    },
  );

  it("rejects a malformed response with AGENT_PROTOCOL_ERROR", async () => {
    const { client, agent } = setup();
    agent.io.removeAllListeners("data");
    const ping = client.ping();
    await new Promise((r) => setTimeout(r, 10));
    agent.send(FrameKind.RESPONSE, 1, { pong: "yes" });
    await expect(ping).rejects.toMatchObject({ code: "AGENT_PROTOCOL_ERROR" });
  });
});
