/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment --
   These tests read parsed JSON bodies (`res.json()` is `any`); the matchers check their shape. */
import { randomBytes } from "node:crypto";
import { createApiKey } from "@msb/keys";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RPC_METHOD_NAMES } from "../http/routes.js";
import { RPC_SAMPLES } from "../test-support/fuzz.js";
import { createHarness, type Harness } from "../test-support/harness.js";

/**
 * Every JSON-RPC method and the MCP route refuse every kind of bad key with the documented
 * code (docs/errors.md): the table runs over RPC_METHOD_NAMES, so a method added there is
 * covered without touching this file, and a method that skipped auth would fail it.
 */

const T0 = Date.UTC(2026, 5, 1);
const HOUR = 3_600_000;

interface BadKey {
  readonly what: string;
  readonly headers: (h: Harness) => Record<string, string>;
  readonly code: "AUTH_REQUIRED" | "AUTH_INVALID" | "AUTH_FORBIDDEN";
  readonly status: number;
  /** The key text, which must not come back in the answer. */
  readonly secret?: (h: Harness) => string;
}

const flip = (s: string, at: number): string =>
  s.slice(0, at) + (s[at] === "A" ? "B" : "A") + s.slice(at + 1);

const tampered = (h: Harness): string => {
  // Same signature, payload claims another namespace.
  const key = h.key("team-a");
  const [body, sig] = key.slice(4).split(".") as [string, string];
  const payload = JSON.parse(Buffer.from(body, "base64url").toString()) as Record<string, unknown>;
  payload["ns"] = "*";
  return `msb_${Buffer.from(JSON.stringify(payload)).toString("base64url")}.${sig}`;
};

const BAD_KEYS: readonly BadKey[] = [
  { what: "missing", headers: () => ({}), code: "AUTH_REQUIRED", status: 401 },
  {
    what: "empty bearer",
    headers: () => ({ authorization: "Bearer " }),
    code: "AUTH_INVALID",
    status: 401,
  },
  {
    what: "garbage",
    headers: () => ({ authorization: "Bearer hello" }),
    code: "AUTH_INVALID",
    status: 401,
  },
  {
    what: "another scheme",
    headers: () => ({ authorization: "Basic dXNlcjpwYXNz" }),
    code: "AUTH_INVALID",
    status: 401,
  },
  {
    what: "over-long",
    headers: () => ({ authorization: `Bearer msb_${"A".repeat(5000)}.x` }),
    code: "AUTH_INVALID",
    status: 401,
  },
  {
    what: "expired",
    headers: (h) => ({
      authorization: `Bearer ${h.key("*", { expiresInMs: HOUR, now: T0 - 2 * HOUR })}`,
    }),
    code: "AUTH_INVALID",
    status: 401,
  },
  {
    what: "tampered payload",
    headers: (h) => ({ authorization: `Bearer ${tampered(h)}` }),
    code: "AUTH_INVALID",
    status: 401,
  },
  {
    what: "tampered signature",
    headers: (h) => {
      const key = h.key("*");
      return { authorization: `Bearer ${flip(key, key.length - 5)}` };
    },
    code: "AUTH_INVALID",
    status: 401,
  },
  {
    what: "signed by another server",
    headers: () => ({
      authorization: `Bearer ${createApiKey(randomBytes(32).toString("hex"), { namespace: "*" })}`,
    }),
    code: "AUTH_INVALID",
    status: 401,
  },
  {
    what: "bad key in Proxy-Authorization",
    headers: () => ({ "proxy-authorization": "Bearer msb_nope.nope" }),
    code: "AUTH_INVALID",
    status: 401,
  },
  {
    what: "wrong namespace",
    headers: (h) => ({ authorization: `Bearer ${h.key("team-a")}` }),
    code: "AUTH_FORBIDDEN",
    status: 403,
  },
];

describe("every method refuses every bad key", () => {
  let h: Harness;
  let base: string;
  beforeAll(async () => {
    h = await createHarness({ images: true, now: () => T0 });
    base = await h.app.listen({ port: 0, host: "127.0.0.1" });
    // A sandbox and an image exist, so a call that slipped past auth would succeed.
    expect(
      (await h.rpc("sandbox.start", RPC_SAMPLES["sandbox.start"], { key: h.key("*") })).statusCode,
    ).toBe(200);
  });
  afterAll(async () => {
    await h.close();
  });

  const rows = RPC_METHOD_NAMES.flatMap((method) => BAD_KEYS.map((bad) => ({ method, bad })));

  it.each(rows)("$method with a $bad.what key → $bad.code", async ({ method, bad }) => {
    const headers = bad.headers(h);
    const created = h.vmm.created.length;
    const res = await h.post(
      JSON.stringify({ jsonrpc: "2.0", method, params: RPC_SAMPLES[method], id: "auth" }),
      headers,
    );
    expect(res.statusCode).toBe(bad.status);
    const body = res.json();
    expect(body).toMatchObject({
      jsonrpc: "2.0",
      id: "auth",
      error: { code: -32002, data: { code: bad.code } },
    });
    expect(body.error.message).toMatch(/msb server keygen|key for/);
    const sent = Object.values(headers)[0];
    if (sent !== undefined && sent.length > 20) expect(res.body).not.toContain(sent.slice(7));
    expect(h.vmm.created.length).toBe(created);
  });

  it("a notification with a bad key runs nothing and is told so", async () => {
    const res = await h.post(
      JSON.stringify({
        jsonrpc: "2.0",
        method: "sandbox.stop",
        params: RPC_SAMPLES["sandbox.stop"],
      }),
      { authorization: "Bearer nope" },
    );
    expect(res.statusCode).toBe(401);
    expect(h.vmm.stopped).toEqual([]);
  });

  const mcpRows = BAD_KEYS.filter((b) => b.code !== "AUTH_FORBIDDEN");
  it.each(mcpRows)("/mcp with a $what key → $code", async (bad) => {
    for (const method of ["POST", "GET", "DELETE"]) {
      const res = await fetch(`${base}/mcp`, {
        method,
        headers: {
          "content-type": "application/json",
          accept: "application/json, text/event-stream",
          ...bad.headers(h),
        },
        ...(method === "POST"
          ? {
              body: JSON.stringify({
                jsonrpc: "2.0",
                id: 1,
                method: "initialize",
                params: {
                  protocolVersion: "2025-03-26",
                  capabilities: {},
                  clientInfo: { name: "t", version: "1" },
                },
              }),
            }
          : {}),
      });
      expect(res.status, method).toBe(bad.status);
      const body = (await res.json()) as { error: { code: number; data: { code: string } } };
      expect(body.error).toMatchObject({ code: -32002, data: { code: bad.code } });
      expect(res.headers.get("mcp-session-id")).toBeNull();
    }
  });

  it("/mcp tools with a wrong-namespace key are isError AUTH_FORBIDDEN results", async () => {
    const key = h.key("team-a");
    const init = await fetch(`${base}/mcp`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        authorization: `Bearer ${key}`,
      },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "initialize",
        params: {
          protocolVersion: "2025-03-26",
          capabilities: {},
          clientInfo: { name: "t", version: "1" },
        },
      }),
    });
    const session = init.headers.get("mcp-session-id") ?? "";
    await init.text();
    const call = await fetch(`${base}/mcp`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        authorization: `Bearer ${key}`,
        "mcp-session-id": session,
      },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 2,
        method: "tools/call",
        params: { name: "sandbox_stop", arguments: { sandbox: "sb", namespace: "default" } },
      }),
    });
    const text = await call.text();
    expect(text).toContain('"isError":true');
    expect(text).toContain("AUTH_FORBIDDEN (-32002)");
    expect(h.vmm.stopped).toEqual([]);
  });
});
