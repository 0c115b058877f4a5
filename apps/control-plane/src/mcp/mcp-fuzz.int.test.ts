import { Agent, request as httpRequest } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  NASTY_STRINGS,
  DEEP_MARKER,
  createRng,
  fuzzCases,
  fuzzSeed,
  leaks,
  mutateBytes,
  mutateValue,
  randomJson,
  serialize,
  type Rng,
} from "../test-support/fuzz.js";
import { createHarness, type Harness } from "../test-support/harness.js";

/**
 * Property tests of /mcp (streamable HTTP, real loopback connection, fake backends). Whatever
 * a client sends inside or outside a session, the server keeps serving the session, every
 * answer is JSON (or SSE carrying JSON-RPC messages), tool failures are `isError` results with
 * an msb code, and nothing internal leaks. Replay with MSB_FUZZ_SEED=<seed>.
 */

const TOOLS: Readonly<Record<string, Record<string, unknown>>> = {
  sandbox_start: { sandbox: "sb", config: { image: "microsandbox/python", memory: 512 } },
  sandbox_stop: { sandbox: "sb" },
  sandbox_run_code: { sandbox: "sb", language: "python", code: "print(1)" },
  sandbox_run_command: { sandbox: "sb", command: "ls", args: ["-la"] },
  sandbox_get_metrics: { namespace: "*" },
};
const PROMPTS = {
  create_python_sandbox: { sandbox_name: "py", namespace: "default" },
  create_node_sandbox: { sandbox_name: "js" },
};

interface Reply {
  readonly status: number;
  readonly type: string;
  readonly text: string;
  readonly session: string;
}

describe("/mcp under random and mutated input", () => {
  let h: Harness;
  let base: string;
  let key: string;
  let session: string;
  const agent = new Agent({ keepAlive: true, maxSockets: 6 });

  function send(
    body: Buffer | undefined,
    headers: Record<string, string>,
    method = "POST",
  ): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        `${base}/mcp`,
        {
          method,
          headers:
            body === undefined ? headers : { ...headers, "content-length": String(body.length) },
          agent,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (chunk: Buffer) => chunks.push(chunk));
          res.on("error", reject);
          res.on("end", () =>
            resolve({
              status: res.statusCode ?? 0,
              type: String(res.headers["content-type"] ?? ""),
              text: Buffer.concat(chunks).toString("utf8"),
              session: String(res.headers["mcp-session-id"] ?? ""),
            }),
          );
        },
      );
      req.on("error", reject);
      // A hang is a finding, not a test timeout: report which case it was.
      req.setTimeout(20_000, () => {
        req.destroy();
        resolve({ status: 0, type: "", text: "(no answer within 20 s)", session: "" });
      });
      req.end(body);
    });
  }

  const headers = (extra: Record<string, string> = {}): Record<string, string> => ({
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    authorization: `Bearer ${key}`,
    ...(session === "" ? {} : { "mcp-session-id": session }),
    ...extra,
  });

  /** The JSON-RPC messages of an answer (plain JSON or the data lines of an SSE stream). */
  function messages(reply: Reply): unknown[] | string {
    if (reply.text === "") return [];
    try {
      if (reply.type.startsWith("text/event-stream")) {
        return reply.text
          .split("\n")
          .filter((line) => line.startsWith("data: "))
          .map((line) => JSON.parse(line.slice(6)) as unknown);
      }
      if (!reply.type.startsWith("application/json")) return `content-type '${reply.type}'`;
      const value = JSON.parse(reply.text) as unknown;
      return Array.isArray(value) ? (value as unknown[]) : [value];
    } catch {
      return "the answer is not JSON";
    }
  }

  function judge(reply: Reply): string | undefined {
    const leak = leaks(reply.text);
    if (leak !== undefined) return `the answer leaks ${leak}`;
    if (reply.status === 0 || reply.status >= 500) return `HTTP ${reply.status}`;
    const msgs = messages(reply);
    if (typeof msgs === "string") return msgs;
    for (const m of msgs) {
      if (m === null || typeof m !== "object") return "a message is not an object";
      const r = m as Record<string, unknown>;
      if (r["jsonrpc"] !== "2.0") return 'jsonrpc is not "2.0"';
      const error = r["error"] as { code?: unknown; message?: unknown } | undefined;
      if (error !== undefined) {
        if (!Number.isInteger(error.code)) return "error.code is not an integer";
        if (typeof error.message !== "string" || error.message === "") return "empty message";
        if (error.code === -32603) return `internal error for bad input: ${error.message}`;
      }
      const result = r["result"] as
        { isError?: boolean; content?: { text?: string }[] } | undefined;
      if (result?.isError === true) {
        const text = result.content?.[0]?.text ?? "";
        if (!/^[A-Z_]+ \(-\d+\): /.test(text))
          return `a tool error without an msb code: ${text.slice(0, 200)}`;
        if (text.startsWith("INTERNAL")) return `INTERNAL tool error: ${text.slice(0, 200)}`;
      }
    }
    return undefined;
  }

  function replacement(rng: Rng): () => unknown {
    return () => (rng.chance(0.05) ? DEEP_MARKER : randomJson(rng));
  }

  function nextMessage(rng: Rng, id: number): Record<string, unknown> {
    const r = rng.next();
    if (r < 0.6) {
      const name = rng.chance(0.9) ? rng.pick(Object.keys(TOOLS)) : rng.pick(NASTY_STRINGS);
      const args = rng.chance(0.9)
        ? mutateValue(rng, TOOLS[name] ?? {}, replacement(rng))
        : rng.pick([null, 5, "x", []]);
      return { jsonrpc: "2.0", id, method: "tools/call", params: { name, arguments: args } };
    }
    if (r < 0.75) {
      const name = rng.pick([...Object.keys(PROMPTS), rng.pick(NASTY_STRINGS)]);
      const args = mutateValue(rng, PROMPTS[name as keyof typeof PROMPTS] ?? {}, () =>
        rng.pick(NASTY_STRINGS),
      );
      return { jsonrpc: "2.0", id, method: "prompts/get", params: { name, arguments: args } };
    }
    if (r < 0.85) {
      return {
        jsonrpc: "2.0",
        id,
        method: rng.pick(["tools/list", "prompts/list", "resources/list", "ping", "nope", ""]),
        params: randomJson(rng, 2),
      };
    }
    return mutateValue(
      rng,
      { jsonrpc: "2.0", id, method: "tools/call", params: { name: "sandbox_get_metrics" } },
      replacement(rng),
    ) as Record<string, unknown>;
  }

  beforeAll(async () => {
    h = await createHarness();
    base = await h.app.listen({ port: 0, host: "127.0.0.1" });
    key = h.key("*");
    session = "";
    const init = await send(
      Buffer.from(
        JSON.stringify({
          jsonrpc: "2.0",
          id: 0,
          method: "initialize",
          params: {
            protocolVersion: "2025-03-26",
            capabilities: {},
            clientInfo: { name: "fuzz", version: "1" },
          },
        }),
      ),
      headers(),
    );
    expect(init.status).toBe(200);
    session = init.session;
    expect(session).not.toBe("");
    const initialized = await send(
      Buffer.from(JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" })),
      headers(),
    );
    expect(initialized.status).toBe(202);
  });
  afterAll(async () => {
    agent.destroy();
    await h.close();
  });

  it(
    "answers every case with JSON-RPC or an isError tool result, and the session keeps working",
    async () => {
      const seed = fuzzSeed();
      const total = fuzzCases(900);
      const rng = createRng(seed);
      const failures: string[] = [];
      let tried = 0;
      for (let i = 0; i < total; i++) {
        const r = rng.next();
        let what: string;
        let reply: Reply;
        let sent: Buffer;
        if (r < 0.7) {
          what = "mutated message";
          sent = Buffer.from(serialize(nextMessage(rng, i + 1)));
          reply = await send(sent, headers());
        } else if (r < 0.8) {
          what = "byte-mutated message";
          sent = mutateBytes(rng, serialize(nextMessage(rng, i + 1)));
          reply = await send(sent, headers());
        } else if (r < 0.85) {
          what = "batch";
          sent = Buffer.from(
            serialize(
              Array.from({ length: 1 + rng.int(4) }, (_, k) => nextMessage(rng, 10_000 * i + k)),
            ),
          );
          reply = await send(sent, headers());
        } else if (r < 0.9) {
          what = "random JSON";
          sent = Buffer.from(JSON.stringify(randomJson(rng, 4)));
          reply = await send(sent, headers());
        } else {
          what = "session or header variant";
          sent = Buffer.from(serialize(nextMessage(rng, i + 1)));
          const variant = rng.pick<Record<string, string>>([
            { "mcp-session-id": "00000000-0000-0000-0000-000000000000" },
            {
              "mcp-session-id": rng
                .pick(NASTY_STRINGS)
                .replace(/[^\x20-\x7e]/g, "?")
                .slice(0, 200),
            },
            { accept: "text/html" },
            { "content-type": "text/plain" },
            { authorization: "Bearer nope" },
            { authorization: `Bearer ${h.key("other")}` },
          ]);
          // GET on a live session is the standalone SSE stream, open for good: only on others.
          const method =
            variant["mcp-session-id"] !== undefined && rng.chance(0.3) ? "GET" : "POST";
          reply = await send(sent, headers(variant), method);
        }
        tried++;
        const wrong = judge(reply);
        if (wrong !== undefined && failures.length < 8) {
          failures.push(
            `#${i} (${what}): ${wrong}\n  sent ${sent.subarray(0, 200).toString("utf8")}\n  got ${reply.status} ${reply.text.slice(0, 300)}`,
          );
        }
      }

      // The session survived all of it.
      const list = await send(
        Buffer.from(JSON.stringify({ jsonrpc: "2.0", id: "last", method: "tools/list" })),
        headers(),
      );
      expect(list.status).toBe(200);
      expect(list.text).toContain("sandbox_run_code");
      console.log(`mcp fuzz: ${tried} cases, seed ${seed} (replay: MSB_FUZZ_SEED=${seed})`);
      expect(tried).toBe(total);
      expect(failures, `seed ${seed}`).toEqual([]);
      // Bad input is never logged as a fault of the server.
      const faults = h.logs.filter((l) => typeof l["level"] === "number" && l["level"] >= 50);
      expect(
        faults.map((l) => l["msg"]),
        `seed ${seed}`,
      ).toEqual([]);
    },
    /* generous: ~100 ms a case on a loaded 2-core machine */ 120_000 + fuzzCases(900) * 100,
  );
});
