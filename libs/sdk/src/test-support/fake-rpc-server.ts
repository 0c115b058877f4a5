import { createServer, type IncomingHttpHeaders, type ServerResponse } from "node:http";
import type { AddressInfo, Socket } from "node:net";

/**
 * A real HTTP server on 127.0.0.1:0 answering JSON-RPC with canned results. Only for the
 * wire-format tests (request shape, headers, error mapping, streaming fallback); everything that
 * needs sandboxes runs against a real msb server (e2e/src/sdk).
 */
export interface Recorded {
  readonly path: string;
  readonly headers: IncomingHttpHeaders;
  readonly body: {
    jsonrpc?: string;
    id?: unknown;
    method?: string;
    params?: Record<string, unknown>;
  };
  readonly method: string;
  readonly params: Record<string, unknown>;
}

export interface Answer {
  readonly result?: unknown;
  readonly error?: unknown;
  /** HTTP status (default 200). */
  readonly status?: number;
  /** A body that is not JSON-RPC. */
  readonly raw?: string;
  /** Server-sent events: [event, data] pairs; a null event writes `data` as a raw line. */
  readonly sse?: readonly (readonly [string | null, unknown])[];
  /** Milliseconds to wait before answering. */
  readonly delayMs?: number;
}

export type Handler = (rec: Recorded) => Answer | undefined;

export interface FakeRpcServer {
  readonly url: string;
  readonly requests: Recorded[];
  /** Distinct TCP connections seen. */
  connections(): number;
  methods(): string[];
  close(): Promise<void>;
}

export async function startFakeRpcServer(handler: Handler): Promise<FakeRpcServer> {
  const requests: Recorded[] = [];
  const sockets = new Set<Socket>();
  let connectionCount = 0;
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const text = Buffer.concat(chunks).toString("utf8");
      let body: Recorded["body"] = {};
      try {
        body = JSON.parse(text) as Recorded["body"];
      } catch {
        body = {};
      }
      const rec: Recorded = {
        path: req.url ?? "",
        headers: req.headers,
        body,
        method: String(body.method),
        params: body.params ?? {},
      };
      requests.push(rec);
      const answer = handler(rec) ?? lifecycle(rec);
      const send = () => respond(res, answer, body.id);
      if (answer.delayMs !== undefined) setTimeout(send, answer.delayMs);
      else send();
    });
  });
  server.on("connection", (socket: Socket) => {
    connectionCount++;
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    connections: () => connectionCount,
    methods: () => requests.map((r) => r.method),
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Starts and stops any sandbox; anything else is METHOD_NOT_FOUND. */
export function lifecycle(rec: Recorded): Answer {
  const name = String(rec.params["sandbox"]);
  if (rec.method === "sandbox.start") return { result: `Sandbox ${name} started successfully` };
  if (rec.method === "sandbox.stop") return { result: `Sandbox ${name} stopped successfully` };
  return {
    status: 404,
    error: { code: -32601, message: "no such method", data: { code: "METHOD_NOT_FOUND" } },
  };
}

function respond(res: ServerResponse, answer: Answer, id: unknown): void {
  if (answer.sse !== undefined) {
    res.writeHead(200, { "Content-Type": "text/event-stream", "Cache-Control": "no-cache" });
    for (const [event, data] of answer.sse) {
      res.write(
        event === null
          ? `${String(data)}\n\n`
          : `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`,
      );
    }
    res.end();
    return;
  }
  if (answer.raw !== undefined) {
    res.writeHead(answer.status ?? 200, { "Content-Type": "text/plain" });
    res.end(answer.raw);
    return;
  }
  const message =
    answer.error !== undefined
      ? { jsonrpc: "2.0", id, error: answer.error }
      : { jsonrpc: "2.0", id, result: answer.result ?? null };
  res.writeHead(answer.status ?? 200, { "Content-Type": "application/json; charset=utf-8" });
  res.end(JSON.stringify(message));
}
