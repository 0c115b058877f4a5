/* eslint-disable @typescript-eslint/no-unsafe-assignment --
   asymmetric matchers (expect.objectContaining) are typed any. */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { WebSocket, type RawData } from "ws";
import { createHarness, type Harness } from "../../test-support/harness.js";
import { ATTACH_PATH } from "../routes.js";

/** A JSON frame or body as the tests read it. */
interface Frame {
  readonly type?: string;
  readonly pid?: number;
  readonly error?: { code?: number; message?: string; data?: { code?: string } };
  readonly [key: string]: unknown;
}

interface Transcript {
  readonly json: Frame[];
  readonly stdout: string;
  readonly stderr: string;
  readonly closeCode: number;
}

/** Opens a session and collects what the server sends until it closes the socket. */
function session(
  url: string,
  frames: (ws: WebSocket) => void,
  headers: Record<string, string> = {},
): Promise<Transcript> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    const json: Frame[] = [];
    let stdout = "";
    let stderr = "";
    ws.on("open", () => frames(ws));
    ws.on("message", (data: RawData, isBinary: boolean) => {
      const buf = data as Buffer;
      if (!isBinary) {
        const msg = JSON.parse(buf.toString("utf8")) as Frame;
        json.push(msg);
        // The fake echoes stdin after `started`; send the rest once it runs.
        if (msg["type"] === "started") ws.emit("started");
        return;
      }
      if (buf[0] === 1) stdout += buf.subarray(1).toString();
      else stderr += buf.subarray(1).toString();
    });
    ws.on("unexpected-response", (_req, res) => {
      let body = "";
      res.on("data", (c: Buffer) => (body += c.toString()));
      res.on("end", () => reject(Object.assign(new Error(body), { status: res.statusCode })));
    });
    ws.on("error", reject);
    ws.on("close", (code) => resolve({ json, stdout, stderr, closeCode: code }));
  });
}

describe(`WebSocket ${ATTACH_PATH}`, () => {
  let h: Harness;
  let url: string;
  beforeEach(async () => {
    h = await createHarness({ dev: false });
    await h.rpc(
      "sandbox.start",
      { sandbox: "sb", config: { image: "microsandbox/python" } },
      { key: h.key("*") },
    );
    await h.app.listen({ host: "127.0.0.1", port: 0 });
    const addr = h.app.server.address() as { port: number };
    url = `ws://127.0.0.1:${addr.port}${ATTACH_PATH}`;
  });
  afterEach(async () => {
    await h.close();
  });

  const auth = (): Record<string, string> => ({ authorization: `Bearer ${h.key("*")}` });

  it("runs a pty session: start, stdin echoed, resize, eof, exit code", async () => {
    const t = await session(
      url,
      (ws) => {
        ws.send(JSON.stringify({ type: "start", sandbox: "sb", pty: { rows: 30, cols: 100 } }));
        ws.once("started", () => {
          ws.send(Buffer.from("echo hi\r"));
          ws.send(JSON.stringify({ type: "resize", rows: 40, cols: 120 }));
          ws.send(JSON.stringify({ type: "eof" }));
        });
      },
      auth(),
    );
    expect(t.json[0]).toEqual({ type: "started", pid: 42 });
    expect(t.stdout).toBe("pty 30x100\necho hi\rresized 40x120\n");
    expect(t.json.at(-1)).toMatchObject({ type: "exit", exit_code: 0 });
    expect(t.closeCode).toBe(1000);
    expect(h.vmm.attaches[0]).toMatchObject({ command: "/bin/sh", pty: { rows: 30, cols: 100 } });
  });

  it("maps a signal name to its number (Ctrl-C as SIGINT ends with 130)", async () => {
    const t = await session(
      url,
      (ws) => {
        ws.send(JSON.stringify({ type: "start", sandbox: "sb", command: "cat" }));
        ws.once("started", () => ws.send(JSON.stringify({ type: "signal", signal: "INT" })));
      },
      auth(),
    );
    expect(t.stdout).toBe("pipes\n");
    expect(t.json.at(-1)).toMatchObject({ type: "exit", exit_code: 130 });
  });

  it("refuses a missing key before the upgrade with the JSON-RPC error of /rpc", async () => {
    const err = (await session(url, () => undefined).catch((e: unknown) => e)) as {
      status: number;
      message: string;
    };
    expect(err.status).toBe(401);
    const body = JSON.parse(err.message) as Frame;
    expect(body.error).toMatchObject({ code: -32002, data: { code: "AUTH_REQUIRED" } });
  });

  it("refuses a namespace-bound key for another namespace after the upgrade", async () => {
    const t = await session(
      url,
      (ws) => ws.send(JSON.stringify({ type: "start", sandbox: "sb", namespace: "default" })),
      { authorization: `Bearer ${h.key("other")}` },
    );
    expect(t.json).toEqual([
      {
        type: "error",
        error: expect.objectContaining({
          data: expect.objectContaining({ code: "AUTH_FORBIDDEN" }),
        }),
      },
    ]);
    expect(t.closeCode).toBe(1008);
  });

  it("answers a missing sandbox and bad params with typed error frames", async () => {
    const missing = await session(
      url,
      (ws) => ws.send(JSON.stringify({ type: "start", sandbox: "nope" })),
      auth(),
    );
    expect(missing.json[0]?.error).toMatchObject({
      code: -32004,
      data: { code: "SANDBOX_NOT_FOUND" },
    });
    const bad = await session(
      url,
      (ws) => ws.send(JSON.stringify({ type: "start", sandbox: "sb", pty: { rows: 0, cols: 80 } })),
      auth(),
    );
    expect(bad.json[0]?.error).toMatchObject({ code: -32602, data: { code: "INVALID_PARAMS" } });
    expect(bad.json[0]?.error?.message).toContain("pty.rows");
    const notJson = await session(url, (ws) => ws.send("{"), auth());
    expect(notJson.json[0]?.error).toMatchObject({ code: -32700, data: { code: "PARSE_ERROR" } });
    expect(h.vmm.attaches).toEqual([]);
  });

  it("answers a plain GET with 426 and a JSON-RPC error naming the next step", async () => {
    const res = await h.app.inject({ method: "GET", url: ATTACH_PATH });
    expect(res.statusCode).toBe(426);
    const body = res.json<Frame>();
    expect(body.error?.data?.code).toBe("INVALID_REQUEST");
    expect(body.error?.message).toContain("WebSocket");
  });
});
