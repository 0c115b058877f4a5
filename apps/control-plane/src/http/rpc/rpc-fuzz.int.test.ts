import { Agent, request as httpRequest } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  DEEP_MARKER,
  NASTY_STRINGS,
  RPC_SAMPLES,
  checkResponse,
  createRng,
  deepJson,
  expectedAnswers,
  fuzzCases,
  fuzzSeed,
  leaks,
  mutateBytes,
  mutateValue,
  randomJson,
  serialize,
  type Rng,
} from "../../test-support/fuzz.js";
import { createHarness, type Harness } from "../../test-support/harness.js";
import { RPC_METHOD_NAMES } from "../routes.js";

/**
 * Property tests of POST /api/v1/rpc over a real loopback connection (fake backends behind
 * the service seam). Whatever arrives, the server keeps running, every answer is JSON-RPC 2.0
 * with a known code, the owed answers match the requests one to one (ids echoed), and nothing
 * internal leaks. Replay a failure with MSB_FUZZ_SEED=<seed>; MSB_FUZZ_CASES=N runs more.
 */

const BODY_LIMIT = 256 * 1024;
const MAX_BATCH = 20;
interface Case {
  readonly what: string;
  readonly body: Buffer;
  readonly headers: Record<string, string>;
}

function replacement(rng: Rng): () => unknown {
  return () => (rng.chance(0.05) ? DEEP_MARKER : randomJson(rng));
}

function mutatedRequest(rng: Rng): Record<string, unknown> {
  const method = rng.pick(RPC_METHOD_NAMES);
  const req: Record<string, unknown> = {
    jsonrpc: "2.0",
    method,
    params: RPC_SAMPLES[method],
    id: rng.chance(0.5) ? rng.int(1_000_000) : `id-${rng.int(1_000_000)}`,
  };
  const r = rng.next();
  if (r < 0.55) req["params"] = mutateValue(rng, req["params"], replacement(rng));
  else if (r < 0.65) req["params"] = { ...RPC_SAMPLES[method], sandbox: rng.pick(NASTY_STRINGS) };
  else if (r < 0.7) req["params"] = { ...RPC_SAMPLES[method], namespace: rng.pick(NASTY_STRINGS) };
  else if (r < 0.75) req["id"] = rng.pick([{}, [], true, 1.5, -0, 1e300, "", "x".repeat(5000)]);
  else if (r < 0.8) delete req["id"];
  else if (r < 0.85) req["method"] = rng.pick([...NASTY_STRINGS.slice(0, 20), 5, null, {}]);
  else if (r < 0.88) req["jsonrpc"] = rng.pick(["1.0", 2, "2.0 ", null]);
  else if (r < 0.92) req["params"] = rng.pick([null, 1, "x", [], [1, 2], true]);
  else req["params"] = mutateValue(rng, req["params"], replacement(rng));
  return req;
}

const JSON_HEADERS = { "content-type": "application/json" };

function nextCase(rng: Rng, key: string): Case {
  const auth = { authorization: `Bearer ${key}` };
  const headers = { ...JSON_HEADERS, ...auth };
  const r = rng.next();
  if (r < 0.42) {
    return { what: "mutated request", body: Buffer.from(serialize(mutatedRequest(rng))), headers };
  }
  if (r < 0.5) {
    // Streamed answers (docs/streaming.md): the outcome travels in the last SSE event.
    const req = mutatedRequest(rng);
    if (rng.chance(0.5)) req["method"] = rng.pick(["sandbox.repl.run", "sandbox.command.run"]);
    return {
      what: "streamed request",
      body: Buffer.from(serialize(req)),
      headers: { ...headers, accept: "text/event-stream" },
    };
  }
  if (r < 0.62) {
    const n = rng.pick([0, 1, 2, 5, MAX_BATCH, MAX_BATCH + 1, 500]);
    const items = Array.from({ length: n }, () =>
      rng.chance(0.8) ? mutatedRequest(rng) : randomJson(rng, 2),
    );
    return { what: `batch of ${n}`, body: Buffer.from(serialize(items)), headers };
  }
  if (r < 0.77) {
    return {
      what: "byte-mutated request",
      body: mutateBytes(rng, serialize(mutatedRequest(rng))),
      headers,
    };
  }
  if (r < 0.85) {
    return { what: "random JSON", body: Buffer.from(JSON.stringify(randomJson(rng, 4))), headers };
  }
  if (r < 0.88) {
    const levels = rng.pick([1_000, 10_000, 100_000]);
    const inner = deepJson(levels, rng.chance(0.5) ? "array" : "object");
    const body = rng.chance(0.5)
      ? inner
      : `{"jsonrpc":"2.0","method":"${rng.pick(RPC_METHOD_NAMES)}","params":{"sandbox":"sb","config":${inner},"code":${inner}},"id":7}`;
    return { what: `${levels} levels deep`, body: Buffer.from(body), headers };
  }
  if (r < 0.91) {
    const size = rng.pick([BODY_LIMIT - 200, BODY_LIMIT + 1, 4 * BODY_LIMIT]);
    const body = JSON.stringify({
      jsonrpc: "2.0",
      method: "sandbox.repl.run",
      params: { sandbox: "sb", language: "python", code: "x".repeat(size) },
      id: "big",
    });
    return { what: `body of ${body.length} bytes`, body: Buffer.from(body), headers };
  }
  if (r < 0.95) {
    const type = rng.pick([
      "text/plain",
      "application/x-www-form-urlencoded",
      "multipart/form-data; boundary=x",
      "application/json; charset=latin1",
      "application/json-rpc",
      "APPLICATION/JSON",
      "application/octet-stream",
      "",
    ]);
    const body = Buffer.from(serialize(mutatedRequest(rng)));
    const h: Record<string, string> = { ...auth };
    if (type !== "") h["content-type"] = type;
    return { what: `content type '${type}'`, body, headers: h };
  }
  const variant = rng.pick<Record<string, string>>([
    {},
    { authorization: "Bearer" },
    { authorization: "Bearer " + key.slice(0, -2) + "AA" },
    { authorization: "Basic dXNlcjpwYXNz" },
    { authorization: key + "x" },
    { authorization: "Bearer \u00e9\u00e9" },
    { "proxy-authorization": `Bearer ${key}` },
  ]);
  return {
    what: "auth header variant",
    body: Buffer.from(serialize(mutatedRequest(rng))),
    headers: { ...JSON_HEADERS, ...variant },
  };
}

function parseSent(body: Buffer): { ok: true; value: unknown } | { ok: false } {
  try {
    const text = new TextDecoder("utf-8", { fatal: false }).decode(body);
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false };
  }
}

describe("POST /api/v1/rpc under random and mutated input", () => {
  let h: Harness;
  let base: string;
  let key: string;
  const agent = new Agent({ keepAlive: true, maxSockets: 8 });

  beforeAll(async () => {
    h = await createHarness({
      images: true,
      env: { MSB_BODY_LIMIT_BYTES: String(BODY_LIMIT), MSB_MAX_BATCH_SIZE: String(MAX_BATCH) },
    });
    base = await h.app.listen({ port: 0, host: "127.0.0.1" });
    key = h.key("*");
    // A sandbox for the mutations to hit, so they reach the service and not only "not found".
    const started = await h.rpc("sandbox.start", RPC_SAMPLES["sandbox.start"], { key });
    expect(started.statusCode).toBe(200);
  });
  afterAll(async () => {
    agent.destroy();
    await h.close();
  });

  function send(
    c: Case,
    path = "/api/v1/rpc",
    method = "POST",
  ): Promise<{ status: number; text: string; type: string }> {
    return new Promise((resolve, reject) => {
      const req = httpRequest(
        `${base}${path}`,
        { method, headers: { ...c.headers, "content-length": String(c.body.length) }, agent },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (chunk: Buffer) => chunks.push(chunk));
          res.on("error", reject);
          res.on("end", () =>
            resolve({
              status: res.statusCode ?? 0,
              text: Buffer.concat(chunks).toString("utf8"),
              type: String(res.headers["content-type"] ?? ""),
            }),
          );
        },
      );
      req.on("error", reject);
      // A hang is a finding, not a test timeout: report which case it was.
      req.setTimeout(30_000, () => {
        req.destroy();
        resolve({ status: 0, text: "(no answer within 30 s)", type: "" });
      });
      req.end(c.body);
    });
  }

  /** Returns what is wrong with the answer to `c`, or undefined. */
  function judge(c: Case, res: { status: number; text: string; type: string }): string | undefined {
    const leak = leaks(res.text);
    if (leak !== undefined) return `the answer leaks ${leak}`;
    const sent = parseSent(c.body);
    const jsonType = /^application\/json(-rpc)?$/i.test(
      (c.headers["content-type"] ?? "").split(";")[0]!.trim(),
    );
    if (res.status === 204) {
      if (res.text !== "") return "204 with a body";
      if (!sent.ok || !jsonType) return "204 for a body that is not JSON";
      const owed = expectedAnswers(sent.value, MAX_BATCH);
      return owed !== "envelope" && owed.ids.length === 0 ? undefined : "204 but answers were owed";
    }
    let body: unknown;
    if (res.type.startsWith("text/event-stream")) {
      if (c.headers["accept"] !== "text/event-stream") return "an event stream nobody asked for";
      const events = res.text.split("\n\n").filter((e) => e.startsWith("event: "));
      const last = events[events.length - 1] ?? "";
      if (!last.startsWith("event: result\ndata: "))
        return "the event stream ends without a result";
      if (events.slice(0, -1).some((e) => !e.startsWith("event: output\n"))) {
        return "an event stream with other events than output before the result";
      }
      body = JSON.parse(last.slice("event: result\ndata: ".length));
    } else {
      if (!res.type.startsWith("application/json")) return `content-type ${res.type}`;
      try {
        body = JSON.parse(res.text);
      } catch {
        return "the answer is not JSON";
      }
    }
    if (Array.isArray(body)) {
      if (res.status !== 200) return `batch answer with HTTP ${res.status}`;
      for (const item of body as unknown[]) {
        const wrong = checkResponse(item);
        if (wrong !== undefined) return `batch item: ${wrong}`;
      }
      if (!sent.ok || !jsonType) return "a batch answer to a body that was not JSON";
      const owed = expectedAnswers(sent.value, MAX_BATCH);
      if (owed === "envelope" || !owed.batch) return "a batch answer to a single request";
      const got = (body as { id: unknown }[]).map((a) => JSON.stringify(a.id)).sort();
      const want = owed.ids.map((id) => JSON.stringify(id)).sort();
      if (JSON.stringify(got) !== JSON.stringify(want)) {
        return `batch ids ${got.join(",")} do not match the owed ${want.join(",")}`;
      }
      return undefined;
    }
    const wrong = checkResponse(body);
    if (wrong !== undefined) return wrong;
    const answer = body as { id: unknown; error?: { data: { code: string } } };
    if (answer.error === undefined && res.status !== 200) return `result with HTTP ${res.status}`;
    const streamed = res.type.startsWith("text/event-stream");
    if (answer.error !== undefined && !streamed && (res.status < 400 || res.status > 599)) {
      return `error with HTTP ${res.status}`;
    }
    // Transport faults (no JSON, body too large, wrong content type) have no request to
    // read an id from: JSON-RPC says id null.
    const reason = (answer.error?.data as { reason?: unknown } | undefined)?.reason;
    const transport =
      answer.error?.data.code === "PARSE_ERROR" ||
      reason === "body_too_large" ||
      reason === "content_type";
    if (transport && answer.id !== null) return "a transport fault answered with an id";
    if (!transport && sent.ok && jsonType) {
      const owed = expectedAnswers(sent.value, MAX_BATCH);
      if (owed !== "envelope" && !owed.batch && owed.ids.length === 1) {
        if (JSON.stringify(answer.id) !== JSON.stringify(owed.ids[0])) {
          return `id ${JSON.stringify(answer.id)} does not echo ${JSON.stringify(owed.ids[0])}`;
        }
      }
    }
    return undefined;
  }

  it(
    "answers every case with well-formed JSON-RPC, echoes ids, leaks nothing, keeps running",
    async () => {
      const seed = fuzzSeed();
      const total = fuzzCases(4_500);
      const rng = createRng(seed);
      const failures: string[] = [];
      const codes = new Map<string, number>();
      let tried = 0;
      let next = 0;
      const worker = async (): Promise<void> => {
        while (next < total) {
          const index = next++;
          // Generated on demand (in index order, so the seed replays): bodies reach megabytes.
          const c = nextCase(rng, key);
          if (index % 100 === 0) {
            // Mutations stop the sandbox now and then; bring it back so runs reach the backend.
            await h.rpc("sandbox.start", RPC_SAMPLES["sandbox.start"], { key });
          }
          const res = await send(c);
          tried++;
          const m = /"code":"([A-Z_]+)"/.exec(res.text);
          const label = `${res.status} ${m?.[1] ?? "result"}`;
          codes.set(label, (codes.get(label) ?? 0) + 1);
          const wrong = judge(c, res);
          if (wrong !== undefined && failures.length < 8) {
            failures.push(
              `#${index} (${c.what}): ${wrong}\n  sent ${c.body.subarray(0, 200).toString("utf8")}\n  got ${res.status} ${res.text.slice(0, 300)}`,
            );
          }
        }
      };
      await Promise.all(Array.from({ length: 6 }, worker));

      const health = await send(
        { what: "health", body: Buffer.alloc(0), headers: {} },
        "/api/v1/health",
        "GET",
      );
      expect(health.status).toBe(200);
      console.log(
        `rpc fuzz: ${tried} cases, seed ${seed} (replay: MSB_FUZZ_SEED=${seed}); answers: ${[
          ...codes,
        ]
          .sort((a, b) => b[1] - a[1])
          .map(([k, v]) => `${k}×${v}`)
          .join(", ")}`,
      );
      expect(tried).toBe(total);
      expect(failures, `seed ${seed}`).toEqual([]);
      // Bad input is never logged as a fault of the server.
      const faults = h.logs.filter((l) => typeof l["level"] === "number" && l["level"] >= 50);
      expect(
        faults.map((l) => l["msg"]),
        `seed ${seed}`,
      ).toEqual([]);
    },
    /* generous: ~100 ms a case on a loaded 2-core machine */ 120_000 + fuzzCases(4_500) * 100,
  );
});
