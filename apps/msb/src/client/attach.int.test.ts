import { once } from "node:events";
import { createServer, type Server } from "node:http";
import type { Socket } from "node:net";
import { PassThrough } from "node:stream";
import { afterEach, describe, expect, it } from "vitest";
import { WebSocketServer, type WebSocket } from "ws";
import { ATTACH_PATH, openAttach } from "./attach.js";

// openAttach against a loopback server speaking the attach wire protocol (docs/api.md): the
// CLI's side of the seam. The real route is tested in apps/control-plane and e2e.

let server: Server | undefined;
const sockets = new Set<Socket>();

afterEach(async () => {
  // Upgraded sockets are no longer the HTTP server's: close() would wait for them.
  for (const s of sockets) s.destroy();
  sockets.clear();
  const s = server;
  server = undefined;
  if (s !== undefined) await new Promise((r) => s.close(r));
});

async function serve(
  onSocket: (ws: WebSocket, start: Record<string, unknown>) => void,
  refuse?: { status: number; body: string },
): Promise<string> {
  const wss = new WebSocketServer({ noServer: true });
  server = createServer();
  server.on("connection", (s: Socket) => sockets.add(s));
  server.on("upgrade", (req, socket, head) => {
    if (refuse !== undefined || req.url !== ATTACH_PATH) {
      socket.end(
        `HTTP/1.1 ${refuse?.status ?? 404} No\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(refuse?.body ?? "")}\r\n\r\n${refuse?.body ?? ""}`,
      );
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.once("message", (data: Buffer) =>
        onSocket(ws, JSON.parse(data.toString()) as Record<string, unknown>),
      );
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  return `http://127.0.0.1:${(server.address() as { port: number }).port}`;
}

const sinks = () => {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  const text = { stdout: "", stderr: "" };
  stdout.on("data", (c: Buffer) => (text.stdout += c.toString()));
  stderr.on("data", (c: Buffer) => (text.stderr += c.toString()));
  return { stdout, stderr, text };
};

const start = { sandbox: "app", namespace: "default", command: "/bin/sh", args: [] };

describe("openAttach", () => {
  it("sends start, routes tagged output to stdout/stderr and resolves with the exit", async () => {
    let seen: Record<string, unknown> = {};
    const url = await serve((ws, s) => {
      seen = s;
      ws.send(JSON.stringify({ type: "started", pid: 7 }));
      ws.send(Buffer.from([1, ...Buffer.from("out")]));
      ws.send(Buffer.from([2, ...Buffer.from("err")]));
      ws.send(JSON.stringify({ type: "exit", exit_code: 3, signal: 0 }));
    });
    const s = sinks();
    const conn = openAttach({ url, apiKey: "k" }, { ...start, pty: { rows: 5, cols: 6 } }, s);
    await conn.started;
    expect(await conn.done).toEqual({ exitCode: 3, signal: 0 });
    expect(s.text).toEqual({ stdout: "out", stderr: "err" });
    expect(seen).toMatchObject({ type: "start", sandbox: "app", pty: { rows: 5, cols: 6 } });
  });

  it("delivers input given before the socket opened after start, in order (a pipe's content and end)", async () => {
    const frames: string[] = [];
    const url = await serve((ws) => {
      ws.on("message", (data: Buffer, isBinary: boolean) => {
        frames.push(isBinary ? `stdin:${data.toString()}` : data.toString());
        if (!isBinary) ws.send(JSON.stringify({ type: "exit", exit_code: 0, signal: 0 }));
      });
    });
    const conn = openAttach({ url }, start, sinks());
    const written = conn.write(Buffer.from("echo hi\n"));
    conn.eof();
    await written;
    expect(await conn.done).toEqual({ exitCode: 0, signal: 0 });
    expect(frames).toEqual(["stdin:echo hi\n", '{"type":"eof"}']);
  });

  it("turns an error frame into the server's typed error", async () => {
    const url = await serve((ws) => {
      ws.send(
        JSON.stringify({
          type: "error",
          error: {
            code: -32004,
            message: "No sandbox 'app'.",
            data: { code: "SANDBOX_NOT_FOUND" },
          },
        }),
      );
      ws.close(1008);
    });
    const conn = openAttach({ url }, start, sinks());
    await expect(conn.done).rejects.toMatchObject({
      code: "SANDBOX_NOT_FOUND",
      message: "No sandbox 'app'.",
    });
  });

  it("turns a refusal before the upgrade into the JSON-RPC error of its body", async () => {
    const body = JSON.stringify({
      jsonrpc: "2.0",
      id: null,
      error: { code: -32002, message: "key needed", data: { code: "AUTH_REQUIRED" } },
    });
    const url = await serve(() => undefined, { status: 401, body });
    const conn = openAttach({ url }, start, sinks());
    await expect(conn.done).rejects.toMatchObject({ code: "AUTH_REQUIRED" });
  });

  it("says the server is not running when nothing listens", async () => {
    const probe = createServer().listen(0, "127.0.0.1");
    await once(probe, "listening");
    const port = (probe.address() as { port: number }).port;
    await new Promise((r) => probe.close(r));
    const conn = openAttach({ url: `http://127.0.0.1:${port}` }, start, sinks());
    await expect(conn.done).rejects.toMatchObject({ code: "SERVER_NOT_RUNNING" });
  });

  it("reports a connection closed before the exit (not a silent success)", async () => {
    const url = await serve((ws) => ws.terminate());
    const conn = openAttach({ url }, start, sinks());
    await expect(conn.done).rejects.toMatchObject({ code: "SERVICE_UNAVAILABLE" });
  });
});
