/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment --
   These tests read parsed JSON bodies (`res.json()` is `any`); the matchers check their shape. */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createHarness, type Harness } from "../../test-support/harness.js";

const START = {
  sandbox: "sb",
  namespace: "default",
  config: { image: "microsandbox/python", memory: 512 },
};

describe("POST /api/v1/rpc: the JSON-RPC envelope", () => {
  let h: Harness;
  beforeEach(async () => {
    h = await createHarness({ dev: true, env: { MSB_BODY_LIMIT_BYTES: "4096" } });
  });
  afterEach(async () => {
    await h.close();
  });

  it("answers malformed JSON with -32700 and a next step", async () => {
    const res = await h.post('{"jsonrpc": "2.0", "method": ');
    expect(res.statusCode).toBe(400);
    const body = res.json();
    expect(body).toMatchObject({ jsonrpc: "2.0", id: null, error: { code: -32700 } });
    expect(body.error.data.code).toBe("PARSE_ERROR");
    expect(body.error.message).toMatch(/Content-Type: application\/json/);
  });

  it("answers an empty body with -32700", async () => {
    const res = await h.post("");
    expect(res.json().error.code).toBe(-32700);
  });

  it("refuses other content types with -32600 and 415", async () => {
    const res = await h.post('{"jsonrpc":"2.0","method":"sandbox.stop","id":1}', {
      "content-type": "text/plain",
    });
    expect(res.statusCode).toBe(415);
    expect(res.json().error).toMatchObject({
      code: -32600,
      data: { code: "INVALID_REQUEST", reason: "content_type" },
    });
  });

  it("refuses bodies over the documented limit with -32600 and 413", async () => {
    const code = "x".repeat(5000);
    const res = await h.rpc("sandbox.repl.run", { sandbox: "sb", language: "python", code });
    expect(res.statusCode).toBe(413);
    expect(res.json().error).toMatchObject({
      code: -32600,
      data: { reason: "body_too_large", limitBytes: 4096 },
    });
    expect(res.json().error.message).toMatch(/4096 bytes/);
  });

  it("lists the methods when the method is unknown (-32601)", async () => {
    const res = await h.rpc("sandbox.explode", {});
    expect(res.statusCode).toBe(404);
    const { error } = res.json();
    expect(error.code).toBe(-32601);
    expect(error.data.methods).toEqual([
      "sandbox.start",
      "sandbox.stop",
      "sandbox.metrics.get",
      "sandbox.repl.run",
      "sandbox.command.run",
      "sandbox.files.write",
      "sandbox.files.read",
      "image.pull",
      "image.list",
      "image.remove",
      "image.build",
      "image.push",
    ]);
    expect(error.message).toContain("sandbox.repl.run");
  });

  it("names each bad field and why (-32602)", async () => {
    const res = await h.rpc("sandbox.start", {
      sandbox: "bad name!",
      config: { image: "python", memory: "lots", envs: ["NOEQUALS"] },
    });
    expect(res.statusCode).toBe(400);
    const { error } = res.json();
    expect(error.code).toBe(-32602);
    expect(error.data.code).toBe("INVALID_PARAMS");
    const fields = (error.data.issues as { field: string }[]).map((i) => i.field);
    expect(fields).toEqual(expect.arrayContaining(["sandbox", "config.memory", "config.envs[0]"]));
    expect(error.message).toMatch(/config\.memory must be a number of MiB/);
  });

  it("rejects positional params and a missing required field", async () => {
    const positional = await h.rpc("sandbox.stop", ["sb", "default"]);
    expect(positional.json().error.data.issues).toEqual([
      { field: "params", message: expect.stringMatching(/object of named parameters/) },
    ]);
    const missing = await h.rpc("sandbox.repl.run", { sandbox: "sb", language: "python" });
    expect(missing.json().error.message).toMatch(/code is required/);
  });

  it("answers a request that is not JSON-RPC 2.0 with -32600 and keeps its id", async () => {
    const res = await h.post(JSON.stringify({ jsonrpc: "1.0", method: "sandbox.stop", id: 7 }));
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ id: 7, error: { code: -32600 } });
  });

  it("answers a notification with 204 and no body, but still runs it", async () => {
    const res = await h.post(
      JSON.stringify({ jsonrpc: "2.0", method: "sandbox.start", params: START }),
    );
    expect(res.statusCode).toBe(204);
    expect(res.body).toBe("");
    expect(h.vmm.created).toHaveLength(1);
  });

  it("answers a batch in one array, skipping notifications", async () => {
    const res = await h.post(
      JSON.stringify([
        { jsonrpc: "2.0", method: "sandbox.start", params: START, id: "a" },
        { jsonrpc: "2.0", method: "sandbox.metrics.get", params: {} },
        { jsonrpc: "2.0", method: "nope", id: "b" },
        42,
      ]),
    );
    expect(res.statusCode).toBe(200);
    const body = res.json<{ id: unknown; result?: unknown; error?: { code: number } }[]>();
    expect(body).toHaveLength(3);
    expect(body.find((r) => r.id === "a")?.result).toBe("Sandbox sb started successfully");
    expect(body.find((r) => r.id === "b")?.error?.code).toBe(-32601);
    expect(body.find((r) => r.id === null)?.error?.code).toBe(-32600);
  });

  it("answers a batch of only notifications with 204", async () => {
    const res = await h.post(
      JSON.stringify([
        { jsonrpc: "2.0", method: "sandbox.metrics.get", params: {} },
        { jsonrpc: "2.0", method: "sandbox.metrics.get" },
      ]),
    );
    expect(res.statusCode).toBe(204);
  });

  it("refuses an empty batch with -32600", async () => {
    const res = await h.post("[]");
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ id: null, error: { code: -32600 } });
    expect(res.json().error.message).toMatch(/batch is empty/);
  });

  it("answers other HTTP methods and unknown routes in JSON-RPC form", async () => {
    const get = await h.app.inject({ method: "GET", url: "/api/v1/rpc" });
    expect(get.statusCode).toBe(405);
    expect(get.json()).toMatchObject({ jsonrpc: "2.0", error: { code: -32600 } });
    expect(get.json().error.message).toMatch(/POST \/api\/v1\/rpc/);
    const missing = await h.app.inject({ method: "POST", url: "/api/v1/nothing" });
    expect(missing.statusCode).toBe(404);
    expect(missing.json().error.message).toMatch(/No route POST \/api\/v1\/nothing/);
  });

  it("turns an internal fault into an opaque error whose request id is also in the log", async () => {
    h.image.failWith = new Error("ENOENT: /secret/internal/path");
    const res = await h.rpc("sandbox.start", START);
    expect(res.statusCode).toBe(500);
    const { error } = res.json();
    expect(error.code).toBe(-32603);
    expect(error.message).not.toMatch(/secret|ENOENT/);
    expect(error.message).not.toBe("Internal server error");
    const requestId = error.data.requestId as string;
    expect(requestId).toBe(res.headers["x-request-id"]);
    const logged = h.logs.find((l) => l["requestId"] === requestId && l["level"] === 50);
    expect(JSON.stringify(logged)).toMatch(/secret\/internal\/path/);
  });

  it("refuses requests addressed to a foreign Host (DNS rebinding)", async () => {
    const res = await h.app.inject({
      method: "POST",
      url: "/api/v1/rpc",
      headers: { host: "evil.example:5555", "content-type": "application/json" },
      body: JSON.stringify({ jsonrpc: "2.0", method: "sandbox.metrics.get", id: 1 }),
    });
    expect(res.statusCode).toBe(421);
    expect(res.json().error.data.reason).toBe("host");
  });
});

describe("GET /api/v1/health", () => {
  let h: Harness;
  beforeEach(async () => {
    h = await createHarness();
  });
  afterEach(async () => {
    await h.close();
  });

  it("says healthy without a key, with version and accelerator", async () => {
    const res = await h.app.inject({ method: "GET", url: "/api/v1/health" });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({
      message: "Service is healthy",
      version: "0.0.0-test",
      accelerator: "tcg",
      services: { image: { status: "up" }, vmm: { status: "up" } },
    });
    // With a key: the details. What is not enforced is said, with the reason.
    const detailed = await h.app.inject({
      method: "GET",
      url: "/api/v1/health",
      headers: { authorization: `Bearer ${h.key("*")}` },
    });
    expect(detailed.json().services.vmm).toMatchObject({ status: "up", hypervisor: "qemu" });
    expect(detailed.json().services.vmm.isolation).toEqual({
      seccomp: true,
      qemuUser: "qemu runs as the server's user",
      networkPolicyEnforced: false,
      networkPolicyNote: "not enforced: the vmm-agent does not run as root",
    });
  });

  it("says degraded with 503 and names the service that is down", async () => {
    h.vmm.down = true;
    const res = await h.app.inject({ method: "GET", url: "/api/v1/health" });
    expect(res.statusCode).toBe(503);
    expect(res.json().message).toMatch(/^Service is degraded: the vmm agent is not reachable/);
    expect(res.json().services.vmm.status).toBe("down");
    expect(res.json().services.image.status).toBe("up");
  });
});
