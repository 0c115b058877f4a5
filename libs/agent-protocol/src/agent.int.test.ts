// The real guest agent (tools/agent/build.sh) in its host test mode — not PID 1, a unix socket
// instead of the virtio-serial port — driven through AgentClient and ReplSession, with the
// real REPL drivers from images/agent/repl. No VM: tools/agent/vm-smoke.sh boots real ones.
import { spawn, spawnSync, execFileSync, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { PassThrough } from "node:stream";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AgentClient } from "./client.js";
import { FrameDecoder, FrameKind, encodeFrame } from "./frame.js";
import { ReplSession } from "./repl-session.js";

const repo = resolve(fileURLToPath(import.meta.url), "../../../..");
const replDir = join(repo, "images/agent/repl");
const hasPython = spawnSync("python3", ["--version"]).status === 0;

let agentBin = "";
let dir = "";
const dirs: string[] = [];

beforeAll(() => {
  const out = execFileSync("bash", [join(repo, "tools/agent/build.sh"), "--json"], {
    encoding: "utf8",
  });
  agentBin = (JSON.parse(out.trim().split("\n").pop() ?? "{}") as { agent: string }).agent;
});

interface Running {
  client: AgentClient;
  agent: ChildProcess;
  socket: Socket;
}
const running: Running[] = [];

async function startAgent(options: { raw?: boolean } = {}): Promise<Running> {
  dir = await mkdtemp(join(tmpdir(), "msb-agent-int-"));
  dirs.push(dir);
  const path = join(dir, "agent.sock");
  const server = createServer();
  server.listen(path);
  await once(server, "listening");
  const accepted = new Promise<Socket>((r) => server.once("connection", r));
  const agent = spawn(agentBin, [], {
    env: { ...process.env, MSB_AGENT_SOCKET: path },
    stdio: ["ignore", "ignore", "pipe"],
  });
  const socket = await accepted;
  server.close();
  // raw: the test reads the socket itself (no client to react to the agent's frames)
  const client = new AgentClient(options.raw ? new PassThrough() : socket, {
    requestTimeoutMs: 20_000,
  });
  if (!options.raw) await client.waitHello({ timeoutMs: 10_000 });
  const r = { client, agent, socket };
  running.push(r);
  return r;
}

afterAll(async () => {
  for (const r of running) {
    r.client.close();
    r.agent.kill("SIGKILL");
  }
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe("guest agent (host test mode)", () => {
  it("says hello and answers ping, configure and metrics", async () => {
    const { client } = await startAgent();
    expect(client.hello).toMatchObject({ protocol: 1, ready: true, bootErrors: [] });
    expect((await client.ping()).uptimeMs).toBeGreaterThan(0);
    expect(await client.configure({ env: { GREETING: "hi" }, workdir: dir })).toEqual({
      errors: [],
    });
    const m = await client.metrics();
    expect(m.memTotalBytes).toBeGreaterThan(0);
    expect(m.procs).toBeGreaterThan(0);
  });

  it("runs commands with exit codes, env, cwd and stdin", async () => {
    const { client } = await startAgent();
    await client.configure({ env: { GREETING: "hi" }, workdir: dir });
    const r = await client.run({
      argv: ["sh", "-c", 'echo "$GREETING $X $(pwd)"; echo oops >&2; exit 3'],
      env: { X: "there" },
    });
    expect(r.exit).toMatchObject({ exitCode: 3, signal: null, timedOut: false });
    expect(r.stdout.toString()).toBe(`hi there ${dir}\n`);
    expect(r.stderr.toString()).toBe("oops\n");
    expect((await client.run({ argv: ["false"] })).exit.exitCode).toBe(1);

    const cat = await client.exec({ argv: ["cat"], stdin: true }, { onOutput: () => undefined });
    await cat.writeStdin(Buffer.alloc(1_000_000, 0x61)); // four windows' worth
    await cat.closeStdin();
    expect((await cat.exit).stdoutBytes).toBe(1_000_000);
  });

  it("reports a missing command as not found, with no process", async () => {
    const { client } = await startAgent();
    await expect(client.exec({ argv: ["no-such-command-xyz"] })).rejects.toMatchObject({
      code: "FILE_NOT_FOUND",
      details: { agentCode: "not_found" },
    });
  });

  it("kills the process group on timeout", async () => {
    const { client } = await startAgent();
    const r = await client.run({
      argv: ["sh", "-c", "sleep 100 & sleep 100; echo never"],
      timeoutMs: 300,
    });
    expect(r.exit).toMatchObject({ timedOut: true, signal: 9, exitCode: 137 });
    expect(r.stdout.toString()).toBe("");
  });

  it("moves large output under flow control and caps what it keeps", async () => {
    const { client } = await startAgent();
    const all = await client.run(
      { argv: ["head", "-c", "3000000", "/dev/zero"] },
      { maxOutputBytes: 4_000_000 },
    );
    expect(all.stdout.length).toBe(3_000_000);
    const capped = await client.run(
      { argv: ["head", "-c", "3000000", "/dev/zero"] },
      { maxOutputBytes: 1000 },
    );
    expect(capped.truncated).toBe(true);
    expect(capped.exit.exitCode).toBe(0);
  });

  it("writes, reads and lists files", async () => {
    const { client } = await startAgent();
    const path = join(dir, "sub/dir/file.bin");
    const data = Buffer.alloc(700_000, 9);
    expect(await client.writeFile(path, data, { mkdirs: true, mode: 0o600 })).toEqual({
      bytes: 700_000,
    });
    expect((await readFile(path)).equals(data)).toBe(true);
    expect((await client.readFile(path)).data.equals(data)).toBe(true);
    const { entries } = await client.listDir(join(dir, "sub/dir"));
    expect(entries).toEqual([
      expect.objectContaining({ name: "file.bin", type: "file", size: 700_000, mode: 0o600 }),
    ]);
    await expect(client.readFile(join(dir, "missing"))).rejects.toMatchObject({
      code: "FILE_NOT_FOUND",
    });
  });

  it("runs a pty with its size", async () => {
    const { client } = await startAgent();
    const r = await client.run({ argv: ["sh", "-c", "stty size"], pty: { rows: 33, cols: 101 } });
    expect(r.stdout.toString()).toContain("33 101");
  });

  it("answers malformed frames with error frames and keeps serving", async () => {
    const { client, socket } = await startAgent();
    const decoder = new FrameDecoder({ from: "guest" });
    const frames: { kind: number; stream: number; body: string }[] = [];
    // read the raw replies next to the client
    socket.on("data", (b: Buffer) => {
      for (const f of decoder.push(b))
        frames.push({ kind: f.kind, stream: f.stream, body: f.payload.toString() });
    });
    socket.write(encodeFrame(FrameKind.REQUEST, 900, "{not json"));
    socket.write(encodeFrame(FrameKind.REQUEST, 901, '{"op":"exec","argv":[1,2]}'));
    socket.write(encodeFrame(FrameKind.REQUEST, 902, '{"op":"nope"}'));
    socket.write(encodeFrame(FrameKind.REQUEST, 903, "[".repeat(100) + "]".repeat(100)));
    socket.write(encodeFrame(FrameKind.STDIN, 904, "data for nobody"));
    await expect(client.ping()).resolves.toBeDefined();
    const codes = frames
      .filter((f) => f.stream >= 900)
      .map((f) => [f.stream, (JSON.parse(f.body) as { error: { code: string } }).error.code]);
    expect(codes).toEqual([
      [900, "bad_request"],
      [901, "bad_request"],
      [902, "unknown_op"],
      [903, "bad_request"],
    ]);
  });

  it("drops its input after an oversize frame until the host reconnects", async () => {
    const { agent, socket } = await startAgent({ raw: true });
    const decoder = new FrameDecoder({ from: "guest" });
    const got: { kind: number; body: string }[] = [];
    socket.on("data", (b: Buffer) => {
      try {
        for (const f of decoder.push(b)) got.push({ kind: f.kind, body: f.payload.toString() });
      } catch {
        // not expected: the agent's frames stay well-formed
      }
    });
    const huge = Buffer.alloc(9);
    huge.writeUInt32BE(0x7fff_ffff, 0);
    socket.write(huge);
    await new Promise((r) => setTimeout(r, 200));
    expect(got.some((f) => f.kind === FrameKind.ERROR && f.body.includes("bad_frame_length"))).toBe(
      true,
    );
    // what follows is dropped, not parsed: no answer to a well-formed ping
    const before = got.length;
    socket.write(encodeFrame(FrameKind.REQUEST, 5, '{"op":"ping"}'));
    await new Promise((r) => setTimeout(r, 200));
    expect(got.length).toBe(before);
    expect(agent.exitCode).toBeNull(); // alive
  });
});

describe.skipIf(!hasPython)("REPL drivers through the agent", () => {
  it("python: state, output, errors, interrupt, restart", async () => {
    const { client } = await startAgent();
    const repl = new ReplSession(client, {
      language: "python",
      argv: ["python3", "-u", join(replDir, "python.py")],
      interruptGraceMs: 2000,
    });
    const text = (o: readonly { stream: string; text: string }[], s = "stdout"): string =>
      o
        .filter((x) => x.stream === s)
        .map((x) => x.text)
        .join("");
    expect(await repl.run("print(5*5)")).toMatchObject({
      status: "success",
      output: [{ stream: "stdout", text: "25\n" }],
    });
    await repl.run("name = 'World'");
    expect(text((await repl.run("print(f'Hello {name}!')")).output)).toBe("Hello World!\n");
    const err = await repl.run("1/0");
    expect(err).toMatchObject({ status: "error", error: { type: "ZeroDivisionError" } });
    expect(text(err.output, "stderr")).toContain("Traceback");
    const t = await repl.run("while True:\n    pass", { timeoutMs: 500 });
    expect(t).toMatchObject({ status: "timeout", restarted: false });
    expect(text((await repl.run("print(name)")).output)).toBe("World\n");
    const stuck = await repl.run(
      "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)",
      { timeoutMs: 300 },
    );
    expect(stuck).toMatchObject({ status: "timeout", restarted: true });
    expect(text((await repl.run("print('fresh')")).output)).toBe("fresh\n");
    const big = await repl.run("print('x' * 3_000_000)");
    expect(big.truncated).toBe(true);
    await repl.close();
  });

  it("node: state, top-level await, errors, interrupt", async () => {
    const { client } = await startAgent();
    const repl = new ReplSession(client, {
      language: "node",
      argv: ["node", "--expose-internals", join(replDir, "node.js")],
    });
    const text = (o: readonly { stream: string; text: string }[]): string =>
      o
        .filter((x) => x.stream === "stdout")
        .map((x) => x.text)
        .join("");
    await repl.run("var name = 'World'");
    expect(text((await repl.run("console.log(`Hello ${name}!`)")).output)).toBe("Hello World!\n");
    expect(
      text((await repl.run("await new Promise((r) => setTimeout(() => r(42), 20))")).output),
    ).toBe("42\n");
    expect(await repl.run("throw new Error('bad')")).toMatchObject({
      status: "error",
      error: { type: "Error", message: "bad" },
    });
    expect(await repl.run("while (true) {}", { timeoutMs: 500 })).toMatchObject({
      status: "timeout",
      restarted: false,
    });
    expect(text((await repl.run("name")).output)).toBe("'World'\n");
    await repl.close();
  });
});
