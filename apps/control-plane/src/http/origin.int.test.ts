/* eslint-disable @typescript-eslint/no-unsafe-member-access --
   These tests read parsed JSON bodies (`res.json()` is `any`). */
import { afterEach, describe, expect, it } from "vitest";
import { WebSocket } from "ws";
import { createHarness, type Harness } from "../test-support/harness.js";
import { ATTACH_PATH, HEALTH_PATH, MCP_PATH, RPC_PATH } from "./routes.js";

/** Opens an attach WebSocket; resolves "open" or the HTTP status that refused the upgrade. */
function tryAttach(url: string, headers: Record<string, string>): Promise<"open" | number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { headers });
    ws.on("open", () => {
      ws.close();
      ws.on("close", () => resolve("open"));
    });
    ws.on("unexpected-response", (_req, res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    ws.on("error", reject);
  });
}

describe("Origin checks on every route (browser pages)", () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  it("refuses a page on another origin that attaches to a sandbox in --dev (no key needed there)", async () => {
    h = await createHarness({ dev: true });
    await h.rpc("sandbox.start", { sandbox: "sb", config: { image: "microsandbox/python" } });
    const address = await h.app.listen({ host: "127.0.0.1", port: 0 });
    const url = `${address.replace("http", "ws")}${ATTACH_PATH}`;
    // A page at https://evil.example runs `new WebSocket("ws://127.0.0.1:5555/...")`: the
    // browser sends its Origin and a loopback Host; before this check it ran `id` in the sandbox.
    expect(await tryAttach(url, { origin: "https://evil.example" })).toBe(403);
    expect(await tryAttach(url, { origin: "null" })).toBe(403);
    // Non-browser clients (CLI, SDKs) send no Origin and keep working.
    expect(await tryAttach(url, {})).toBe("open");
  });

  it("refuses foreign origins on JSON-RPC, MCP and health too, and allows configured ones", async () => {
    h = await createHarness({ dev: true, env: { MSB_ALLOWED_ORIGINS: "https://app.example.com" } });
    const rpc = (origin: string) =>
      h!.rpc("sandbox.metrics.get", { namespace: "*" }, { headers: { origin } });
    const denied = await rpc("https://evil.example");
    expect(denied.statusCode).toBe(403);
    expect(denied.json().error.data).toMatchObject({ code: "AUTH_FORBIDDEN", reason: "origin" });
    expect(denied.json().error.message).toMatch(/MSB_ALLOWED_ORIGINS/);
    expect((await rpc("https://app.example.com")).statusCode).toBe(200);
    for (const [method, url] of [
      ["POST", MCP_PATH],
      ["GET", MCP_PATH],
      ["GET", HEALTH_PATH],
      ["POST", RPC_PATH],
    ] as const) {
      const res = await h.app.inject({
        method,
        url,
        headers: { origin: "http://localhost.evil.example", "content-type": "application/json" },
        body: method === "POST" ? "{}" : undefined,
      });
      expect(res.statusCode, `${method} ${url}`).toBe(403);
    }
  });

  it("answers only the Host names in MSB_ALLOWED_HOSTS when set (a server not on loopback)", async () => {
    h = await createHarness({ dev: true, env: { MSB_ALLOWED_HOSTS: "msb.example.com,127.0.0.1" } });
    const get = (host: string) =>
      h!.app.inject({ method: "GET", url: HEALTH_PATH, headers: { host } });
    expect((await get("msb.example.com")).statusCode).toBe(200);
    expect((await get("msb.example.com:5555")).statusCode).toBe(200);
    expect((await get("127.0.0.1:5555")).statusCode).toBe(200);
    const rebound = await get("attacker.example");
    expect(rebound.statusCode).toBe(421);
    expect(rebound.json().error.message).toMatch(/MSB_ALLOWED_HOSTS/);
  });
});
