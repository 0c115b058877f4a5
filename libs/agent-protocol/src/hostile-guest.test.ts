import { afterEach, describe, expect, it } from "vitest";
import { AgentClient } from "./client.js";
import {
  encodeFrame,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  FrameKind,
  MAX_FRAME_BYTES,
} from "./frame.js";
import { duplexPair, FakeAgent } from "./test-support/fake-agent.js";
import { seededRandom } from "@msb/testing";

/**
 * The guest is untrusted: everything it sends reaches the host decoder and AgentClient. These
 * tests play a hostile or broken guest and check that the host stays bounded in memory, fails
 * calls with the documented codes (AGENT_PROTOCOL_ERROR, AGENT_TIMEOUT), and never throws
 * out of its event handlers.
 */

/** What a protocol violation throws (expect.objectContaining is typed `any`). */
const PROTOCOL_ERROR = /broke the protocol/;

let clients: AgentClient[] = [];
afterEach(() => {
  for (const c of clients) c.close();
  clients = [];
});

function setup(requestTimeoutMs = 5_000): { client: AgentClient; agent: FakeAgent } {
  const [host, guest] = duplexPair();
  const agent = new FakeAgent(guest);
  const client = new AgentClient(host, { requestTimeoutMs });
  clients.push(client);
  agent.sendHello();
  return { client, agent };
}

/** Lets queued stream events run; the in-memory duplex delivers within a few turns. */
async function settle(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
}

/**
 * The guest stops answering but keeps reading: returns the stream id of the last REQUEST
 * the host sent since.
 */
function silence(agent: FakeAgent): () => number {
  agent.io.removeAllListeners("data");
  const decoder = new FrameDecoder({ from: "host" });
  let last = -1;
  agent.io.on("data", (chunk: Buffer) => {
    for (const f of decoder.push(chunk)) if (f.kind === FrameKind.REQUEST) last = f.stream;
  });
  return () => last;
}

describe("FrameDecoder against hostile bytes", () => {
  it("never holds more than one maximal frame, however the bytes are split", () => {
    const d = new FrameDecoder({ from: "guest" });
    const frame = encodeFrame(FrameKind.STDOUT, 1, Buffer.alloc(MAX_FRAME_BYTES - 5, 1));
    let peak = 0;
    let frames = 0;
    for (let off = 0; off < frame.length; off += 7_777) {
      frames += d.push(frame.subarray(off, off + 7_777)).length;
      peak = Math.max(peak, d.bufferedBytes);
    }
    expect(frames).toBe(1);
    expect(peak).toBeLessThanOrEqual(MAX_FRAME_BYTES + 4);
    expect(d.bufferedBytes).toBe(0);
  });

  it("rejects an oversize length before buffering its body", () => {
    const d = new FrameDecoder({ from: "guest" });
    const head = Buffer.alloc(FRAME_HEADER_BYTES);
    head.writeUInt32BE(MAX_FRAME_BYTES + 1, 0);
    head.writeUInt8(FrameKind.STDOUT, 4);
    expect(() => d.push(head)).toThrow(PROTOCOL_ERROR);
    expect(d.bufferedBytes).toBe(0);
    // It stays failed: framing is lost.
    expect(() => d.push(encodeFrame(FrameKind.HELLO, 0, "{}"))).toThrow(PROTOCOL_ERROR);
  });

  it("random garbage: every input either waits for more bytes or fails with AGENT_PROTOCOL_ERROR", () => {
    const seed = Number(process.env["MSB_FUZZ_SEED"] ?? Date.now() % 1_000_000);
    const next = seededRandom(seed);
    const cases = Number(process.env["MSB_FUZZ_CASES"] ?? 2_000);
    const outcomes = { frames: 0, waiting: 0, rejected: 0 };
    for (let i = 0; i < cases; i++) {
      const d = new FrameDecoder({ from: "guest" });
      const bytes = Buffer.alloc(1 + Math.floor(next() * 64));
      for (let j = 0; j < bytes.length; j++) bytes[j] = Math.floor(next() * 256);
      // Half the cases look like a frame header with a plausible length.
      if (next() < 0.5 && bytes.length >= 9) bytes.writeUInt32BE(5 + Math.floor(next() * 64), 0);
      try {
        const frames = d.push(bytes);
        if (frames.length > 0) outcomes.frames++;
        else outcomes.waiting++;
        expect(d.bufferedBytes).toBeLessThanOrEqual(bytes.length);
      } catch (err) {
        expect(err).toMatchObject({ code: "AGENT_PROTOCOL_ERROR" });
        outcomes.rejected++;
      }
    }
    console.log(`frame decoder garbage: ${cases} cases, seed ${seed}: ${JSON.stringify(outcomes)}`);
    expect(outcomes.rejected).toBeGreaterThan(0);
  });

  it.each([0, 13, 255, FrameKind.REQUEST, FrameKind.STDIN, FrameKind.STDIN_EOF, FrameKind.CTRL_IN])(
    "refuses kind %i from a guest",
    (kind) => {
      const d = new FrameDecoder({ from: "guest" });
      const f = Buffer.alloc(FRAME_HEADER_BYTES);
      f.writeUInt32BE(5, 0);
      f.writeUInt8(kind, 4);
      expect(() => d.push(f)).toThrow(PROTOCOL_ERROR);
    },
  );
});

describe("AgentClient against a hostile guest", () => {
  it("resets the connection when the guest ignores the flow-control window, with bounded memory", async () => {
    const { client, agent } = setup();
    // Nobody reads the output: only the window may bound what the host holds.
    const p = await client.exec({ argv: ["sleep"] }, { highWaterMarkBytes: 1 });
    const heapBefore = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    const chunk = Buffer.alloc(60_000, 0x41);
    let sent = 0;
    for (let i = 0; i < 200 && client.closedReason === undefined; i++) {
      agent.send(FrameKind.STDOUT, p.stream, chunk);
      sent += chunk.length;
      await settle();
    }
    const heapAfter = process.memoryUsage().heapUsed + process.memoryUsage().arrayBuffers;
    console.log(
      `window flood: guest sent ${sent} bytes before the reset; heap+buffers grew ${heapAfter - heapBefore} bytes`,
    );
    expect(client.closedReason).toMatchObject({
      code: "AGENT_PROTOCOL_ERROR",
      message: expect.stringMatching(/flow-control window/) as unknown,
    });
    // The default window is 256 KiB: the fifth 60 000-byte frame is over it.
    expect(sent).toBeLessThanOrEqual(262_144 + chunk.length);
    await expect(p.exit).rejects.toMatchObject({ code: "AGENT_PROTOCOL_ERROR" });
  });

  it("a guest that respects the window cannot make an unread process hold more than window + high-water mark", async () => {
    const { client, agent } = setup();
    const p = await client.exec(
      { argv: ["yes", String(8_000_000)] },
      { highWaterMarkBytes: 100_000 },
    );
    await settle();
    const arrived = agent.received
      .filter((f) => f.kind === FrameKind.WINDOW && f.stream === p.stream)
      .reduce((n, f) => n + f.payload.readUInt32BE(0), 0);
    // Credit returned so far plus the initial window bounds what was ever sent to the host.
    expect(arrived + 262_144).toBeLessThanOrEqual(100_000 + 262_144 + 65_536);
    let total = 0;
    for await (const c of p.output()) total += c.data.length;
    expect(total).toBe(8_000_000);
    expect(client.closedReason).toBeUndefined();
  });

  it("ignores frames for streams it does not know, and keeps serving", async () => {
    const { client, agent } = setup();
    await client.waitHello();
    agent.send(FrameKind.STDOUT, 4242, Buffer.from("stray"));
    agent.send(FrameKind.STDERR, 4243, Buffer.from("stray"));
    agent.send(FrameKind.RESPONSE, 4244, { pong: true, uptime_ms: 1 });
    agent.send(FrameKind.EXIT, 4245, {
      exit_code: 0,
      signal: null,
      timed_out: false,
      duration_ms: 1,
    });
    const w = Buffer.alloc(4);
    w.writeUInt32BE(1_000_000);
    agent.send(FrameKind.WINDOW, 4246, w);
    agent.send(FrameKind.ERROR, 4247, { error: { code: "bad_frame", message: "stray" } });
    await expect(client.ping()).resolves.toEqual({ uptimeMs: 1234 });
    expect(client.closedReason).toBeUndefined();
  });

  it("times out with AGENT_TIMEOUT when the guest never answers, and drops the late answer", async () => {
    const { client, agent } = setup();
    await client.waitHello();
    const lastRequestStream = silence(agent);
    await expect(client.exec({ argv: ["sleep"] }, { timeoutMs: 30 })).rejects.toMatchObject({
      code: "AGENT_TIMEOUT",
      details: { timeoutMs: 30 },
    });
    await expect(client.metrics({ timeoutMs: 30 })).rejects.toMatchObject({
      code: "AGENT_TIMEOUT",
    });
    await expect(client.readFile("/x", { timeoutMs: 30 })).rejects.toMatchObject({
      code: "AGENT_TIMEOUT",
    });
    agent.send(FrameKind.RESPONSE, lastRequestStream(), { pid: 1 });
    await settle();
    expect(client.closedReason).toBeUndefined();
  });

  it("a second HELLO mid-stream leaves running processes alone; one with another protocol resets", async () => {
    const { client, agent } = setup();
    const p = await client.exec({ argv: ["sleep"] }, { onOutput: () => undefined });
    agent.sendHello({ agent: "again", window_bytes: 4_294_967_295 });
    await expect(client.ping()).resolves.toEqual({ uptimeMs: 1234 });
    expect(client.hello?.agentVersion).toBe("again");
    await p.kill();
    await expect(p.exit).resolves.toMatchObject({ signal: 9 });

    const q = await client.exec({ argv: ["sleep"] }, { onOutput: () => undefined });
    agent.sendHello({ protocol: 99 });
    await expect(q.exit).rejects.toMatchObject({ code: "AGENT_PROTOCOL_ERROR" });
  });

  it("a HELLO announcing a tiny frame size fails requests with AGENT_PROTOCOL_ERROR, not a hang", async () => {
    const [host, guest] = duplexPair();
    const agent = new FakeAgent(guest);
    const client = new AgentClient(host, { requestTimeoutMs: 5_000 });
    clients.push(client);
    agent.sendHello({ max_frame_bytes: 6 });
    await expect(client.ping()).rejects.toMatchObject({ code: "AGENT_PROTOCOL_ERROR" });
  });

  it.each([
    ["invalid JSON", Buffer.from("{not json")],
    ["JSON of the wrong shape", Buffer.from('{"pong":"yes"}')],
    [
      "1 MiB of JSON",
      Buffer.from(
        JSON.stringify({ pong: true, uptime_ms: 1, pad: "x".repeat(MAX_FRAME_BYTES - 100) }),
      ),
    ],
    ["100 000 nested arrays", Buffer.from("[".repeat(100_000) + "]".repeat(100_000))],
    ["invalid UTF-8", Buffer.from([0x7b, 0xff, 0xfe, 0x7d])],
  ])(
    "a RESPONSE with %s is AGENT_PROTOCOL_ERROR (or ignored extra fields), never a crash",
    async (_what, payload) => {
      const { client, agent } = setup();
      await client.waitHello();
      const lastRequestStream = silence(agent);
      const ping = client.ping();
      await settle();
      agent.raw(encodeFrame(FrameKind.RESPONSE, lastRequestStream(), payload));
      const outcome = await ping.then(
        (v) => ({ ok: v }),
        (e: unknown) => ({ err: e }),
      );
      if ("ok" in outcome) expect(outcome.ok).toEqual({ uptimeMs: 1 });
      else expect(outcome.err).toMatchObject({ code: "AGENT_PROTOCOL_ERROR" });
    },
  );

  it("EXIT before the exec RESPONSE is a protocol error", async () => {
    const { client, agent } = setup();
    await client.waitHello();
    const lastRequestStream = silence(agent);
    const exec = client.exec({ argv: ["sleep"] });
    await settle();
    agent.send(FrameKind.EXIT, lastRequestStream(), {
      exit_code: 0,
      signal: null,
      timed_out: false,
      duration_ms: 1,
    });
    await expect(exec).rejects.toMatchObject({ code: "AGENT_PROTOCOL_ERROR" });
  });

  it("an agent error code the host does not know is reported as AGENT_PROTOCOL_ERROR, not INTERNAL", async () => {
    const { client, agent } = setup();
    await client.waitHello();
    const lastRequestStream = silence(agent);
    const ping = client.ping();
    await settle();
    agent.send(FrameKind.RESPONSE, lastRequestStream(), {
      error: { code: "made_up", message: "whatever the guest says" },
    });
    await expect(ping).rejects.toMatchObject({
      code: "AGENT_PROTOCOL_ERROR",
      details: { agentCode: "made_up" },
    });
    // Not fatal: the connection still serves other calls.
    expect(client.closedReason).toBeUndefined();
  });
});
