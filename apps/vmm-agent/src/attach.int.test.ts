// attachProcess against the real guest agent in its host test mode (a unix socket instead of
// the virtio-serial port, not PID 1): the pty size, Ctrl-C as a byte, pipes with EOF, and the
// process group killed when the caller goes away. No VM; e2e/src/cli/shell.test.ts boots one.
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createAgentClient, type AgentClient } from "@msb/agent-protocol";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { attachProcess, type AttachEvent, type AttachInput, type GuestAccess } from "./attach.js";

const repo = resolve(fileURLToPath(import.meta.url), "../../../..");
let agentBin = "";
const cleanups: (() => Promise<void> | void)[] = [];

beforeAll(() => {
  const out = execFileSync("bash", [join(repo, "tools/agent/build.sh"), "--json"], {
    encoding: "utf8",
  });
  agentBin = (JSON.parse(out.trim().split("\n").pop() ?? "{}") as { agent: string }).agent;
}, 600_000);

afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

async function startAgent(): Promise<{ client: AgentClient; agent: ChildProcess }> {
  const dir = await mkdtemp(join(tmpdir(), "msb-attach-int-"));
  const path = join(dir, "agent.sock");
  const server = createServer();
  server.listen(path);
  await once(server, "listening");
  const accepted = new Promise<Socket>((r) => server.once("connection", r));
  const agent = spawn(agentBin, [], {
    env: { ...process.env, MSB_AGENT_SOCKET: path },
    stdio: ["ignore", "ignore", "inherit"],
  });
  const socket = await accepted;
  server.close();
  const client = createAgentClient(socket, { requestTimeoutMs: 20_000 });
  await client.waitHello({ timeoutMs: 10_000 });
  cleanups.push(async () => {
    client.close();
    agent.kill("SIGKILL");
    await rm(dir, { recursive: true, force: true });
  });
  return { client, agent };
}

/** Inputs the test pushes while it reads events. */
function inputs(): { iterable: AsyncIterable<AttachInput>; push(i: AttachInput): void } {
  const items: AttachInput[] = [];
  let wake: (() => void) | undefined;
  return {
    push(i) {
      items.push(i);
      wake?.();
    },
    iterable: (async function* () {
      for (;;) {
        const next = items.shift();
        if (next !== undefined) {
          yield next;
          continue;
        }
        await new Promise<void>((r) => (wake = r));
      }
    })(),
  };
}

function guestOf(client: AgentClient): GuestAccess {
  return { client, translate: (err) => Promise.resolve(err) };
}

/** Reads events until `until` matches the output so far (or the exit). */
async function readUntil(
  events: AsyncGenerator<AttachEvent>,
  until: (text: string) => boolean,
): Promise<{ text: string; exit?: AttachEvent & { kind: "exit" } }> {
  let text = "";
  for (;;) {
    const next = await events.next();
    if (next.done === true) return { text };
    const e = next.value;
    if (e.kind === "output") text += e.data.toString();
    if (e.kind === "exit") return { text, exit: e };
    if (until(text)) return { text };
  }
}

describe("attachProcess (real guest agent, host test mode)", () => {
  it("runs a shell on a pty of the asked size, resizes it, and Ctrl-C interrupts a command", async () => {
    const { client } = await startAgent();
    const input = inputs();
    const events = attachProcess(
      guestOf(client),
      {
        vmId: "t",
        command: "sh",
        args: ["-i"],
        env: ["PS1=$ "],
        workdir: "",
        pty: { rows: 33, cols: 101 },
      },
      input.iterable,
      new AbortController().signal,
    );
    const first = await events.next();
    expect(first.value).toMatchObject({ kind: "started" });
    input.push({ kind: "stdin", data: Buffer.from("stty size\n") });
    expect((await readUntil(events, (t) => t.includes("33 101"))).text).toContain("33 101");
    input.push({ kind: "resize", rows: 40, cols: 120 });
    input.push({ kind: "stdin", data: Buffer.from("stty size\n") });
    expect((await readUntil(events, (t) => t.includes("40 120"))).text).toContain("40 120");
    // Ctrl-C is a byte on the terminal: the line discipline turns it into SIGINT for `sleep`.
    input.push({ kind: "stdin", data: Buffer.from("sleep 100; echo after-$?\n") });
    await readUntil(events, (t) => t.includes("sleep 100"));
    input.push({ kind: "stdin", data: Buffer.from([3]) });
    input.push({ kind: "stdin", data: Buffer.from("echo still-here\n") });
    expect((await readUntil(events, (t) => /still-here\r?\n/.test(t))).text).toMatch(/still-here/);
    input.push({ kind: "stdin", data: Buffer.from("exit 7\n") });
    const end = await readUntil(events, () => false);
    expect(end.exit).toMatchObject({ kind: "exit", exitCode: 7 });
  });

  it("without a pty keeps stdout and stderr apart and ends at stdin EOF", async () => {
    const { client } = await startAgent();
    const input = inputs();
    const events = attachProcess(
      guestOf(client),
      { vmId: "t", command: "sh", args: [], env: [], workdir: "", pty: undefined },
      input.iterable,
      new AbortController().signal,
    );
    input.push({
      kind: "stdin",
      data: Buffer.from("echo out; echo err >&2; test -t 0 || echo no-tty\n"),
    });
    input.push({ kind: "eof" });
    const seen: { stream: string; text: string }[] = [];
    let exit: AttachEvent | undefined;
    for await (const e of events) {
      if (e.kind === "output") seen.push({ stream: e.stream, text: e.data.toString() });
      if (e.kind === "exit") exit = e;
    }
    expect(
      seen
        .filter((s) => s.stream === "stdout")
        .map((s) => s.text)
        .join(""),
    ).toBe("out\nno-tty\n");
    expect(
      seen
        .filter((s) => s.stream === "stderr")
        .map((s) => s.text)
        .join(""),
    ).toBe("err\n");
    expect(exit).toMatchObject({ kind: "exit", exitCode: 0 });
  });

  it("kills the process group when the caller goes away while the process is silent", async () => {
    const { client } = await startAgent();
    const input = inputs();
    const caller = new AbortController();
    const events = attachProcess(
      guestOf(client),
      {
        vmId: "t",
        command: "sh",
        args: ["-c", "sleep 300 & echo $!; wait"],
        env: [],
        workdir: "",
        pty: undefined,
      },
      input.iterable,
      caller.signal,
    );
    const { text } = await readUntil(events, (t) => t.endsWith("\n"));
    const child = Number(text.trim());
    expect(child).toBeGreaterThan(1);
    const alive = (pid: number): boolean => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    expect(alive(child)).toBe(true);
    // `wait` prints nothing: only the abort can end the pending read.
    const pending = events.next();
    caller.abort();
    await expect(pending).rejects.toMatchObject({ code: "CANCELLED" });
    // The agent reaps the group after SIGKILL; wait for it via the agent, not a sleep.
    const ps = await client.run({
      argv: [
        "sh",
        "-c",
        `while s=$(cut -d" " -f3 /proc/${child}/stat 2>/dev/null) && [ "$s" != Z ]; do sleep 0.05; done; echo gone`,
      ],
      timeoutMs: 20_000,
    });
    expect(ps.stdout.toString()).toBe("gone\n");
  });
});
