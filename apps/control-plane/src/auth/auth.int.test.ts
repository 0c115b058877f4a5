/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-call --
   These tests read parsed JSON bodies (`res.json()` is `any`); the matchers check their shape. */
import { randomBytes } from "node:crypto";
import { createApiKey } from "@msb/keys";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createHarness, type Harness } from "../test-support/harness.js";

const T0 = Date.UTC(2026, 5, 1);
const start = (namespace: string, sandbox = "sb") => ({
  sandbox,
  namespace,
  config: { image: "microsandbox/python" },
});

describe("authentication and namespaces", () => {
  let h: Harness;
  let clock = T0;
  beforeEach(async () => {
    clock = T0;
    h = await createHarness({ now: () => clock });
  });
  afterEach(async () => {
    await h.close();
  });

  it("requires a key (-32002 AUTH_REQUIRED, 401) and says how to get one", async () => {
    const res = await h.rpc("sandbox.metrics.get", {});
    expect(res.statusCode).toBe(401);
    const { error } = res.json();
    expect(error).toMatchObject({ code: -32002, data: { code: "AUTH_REQUIRED" } });
    expect(error.message).toMatch(/msb server keygen/);
  });

  it("accepts an all-namespaces key in any namespace", async () => {
    const key = h.key("*");
    expect((await h.rpc("sandbox.start", start("team-a"), { key })).statusCode).toBe(200);
    expect((await h.rpc("sandbox.start", start("team-b"), { key })).statusCode).toBe(200);
  });

  it("lets a namespace key touch only its namespace (AUTH_FORBIDDEN, 403)", async () => {
    const key = h.key("team-a");
    const ok = await h.rpc("sandbox.start", start("team-a"), { key });
    expect(ok.json().result).toBe("Sandbox sb started successfully");
    const denied = await h.rpc("sandbox.start", start("team-b"), { key });
    expect(denied.statusCode).toBe(403);
    expect(denied.json().error).toMatchObject({
      code: -32002,
      data: { code: "AUTH_FORBIDDEN", namespace: "team-b" },
    });
    expect(h.vmm.created.map((s) => s.vmId)).toEqual(["team-a/sb"]);
    // The default namespace is another namespace too.
    const implicit = await h.rpc("sandbox.stop", { sandbox: "sb" }, { key });
    expect(implicit.json().error.data.code).toBe("AUTH_FORBIDDEN");
  });

  it('lists only the key\'s own sandboxes for namespace "*"', async () => {
    const all = h.key("*");
    await h.rpc("sandbox.start", start("team-a", "a1"), { key: all });
    await h.rpc("sandbox.start", start("team-b", "b1"), { key: all });
    const mine = await h.rpc("sandbox.metrics.get", { namespace: "*" }, { key: h.key("team-a") });
    expect(mine.json().result.sandboxes.map((s: { name: string }) => s.name)).toEqual(["a1"]);
    const every = await h.rpc("sandbox.metrics.get", { namespace: "*" }, { key: all });
    expect(every.json().result.sandboxes).toHaveLength(2);
  });

  it("rejects an expired key and says when it expired", async () => {
    const key = createApiKey(h.secret, { namespace: "*", expiresInMs: 60_000, now: T0 });
    expect((await h.rpc("sandbox.metrics.get", {}, { key })).statusCode).toBe(200);
    clock = T0 + 60_000;
    const res = await h.rpc("sandbox.metrics.get", {}, { key });
    expect(res.statusCode).toBe(401);
    expect(res.json().error).toMatchObject({
      code: -32002,
      data: { code: "AUTH_INVALID", reason: "expired" },
    });
    expect(res.json().error.message).toMatch(/expired at .*msb server keygen --expire/);
  });

  it("rejects a tampered key", async () => {
    const key = h.key("team-a");
    const [body, sig] = key.slice(4).split(".") as [string, string];
    const payload = JSON.parse(Buffer.from(body, "base64url").toString()) as { ns: string };
    payload.ns = "*";
    const forged = `msb_${Buffer.from(JSON.stringify(payload)).toString("base64url")}.${sig}`;
    const res = await h.rpc("sandbox.metrics.get", { namespace: "*" }, { key: forged });
    expect(res.json().error.data).toMatchObject({ code: "AUTH_INVALID", reason: "signature" });
  });

  it("rejects a key from another server", async () => {
    const foreign = createApiKey(randomBytes(32).toString("hex"), { namespace: "*" });
    const res = await h.rpc("sandbox.metrics.get", {}, { key: foreign });
    expect(res.json().error.data).toMatchObject({ code: "AUTH_INVALID", reason: "signature" });
    expect(res.json().error.message).toMatch(/another msb server/);
  });

  it("reads the key bare, or from Proxy-Authorization", async () => {
    const key = h.key("*");
    const bare = await h.rpc("sandbox.metrics.get", {}, { headers: { authorization: key } });
    expect(bare.statusCode).toBe(200);
    const proxy = await h.rpc(
      "sandbox.metrics.get",
      {},
      { headers: { "proxy-authorization": `Bearer ${key}` } },
    );
    expect(proxy.statusCode).toBe(200);
    const basic = await h.rpc(
      "sandbox.metrics.get",
      {},
      { headers: { authorization: "Basic eDp5" } },
    );
    expect(basic.json().error.data.code).toBe("AUTH_INVALID");
  });

  it("does not run a notification sent with a bad key, and says so", async () => {
    const res = await h.post(
      JSON.stringify({ jsonrpc: "2.0", method: "sandbox.start", params: start("default") }),
    );
    expect(res.statusCode).toBe(401);
    expect(res.json().error.data.code).toBe("AUTH_REQUIRED");
    expect(h.vmm.created).toHaveLength(0);
  });

  it("never needs a key for health", async () => {
    const res = await h.app.inject({ method: "GET", url: "/api/v1/health" });
    expect(res.statusCode).toBe(200);
  });

  it("keeps health minimal without a key (no uid range, KVM error, templates, VM counts) and detailed with one", async () => {
    h.vmm.hostExtras = {
      note: "KVM probe failed: /dev/kvm: Permission denied (uid 1900000000-1900065535)",
      vmsRunning: 3,
      maxVms: 24,
      isolation: {
        seccomp: true,
        qemuUser: "dedicated uid per VM (1900000000-1900065535)",
        networkPolicyEnforced: true,
        networkPolicyNote: "",
      },
      templates: [
        {
          key: "k1",
          imageReference: "registry.internal/secret-team/app:1",
          memoryMib: 512,
          vcpus: 1,
          state: "ready",
          reason: "",
          warmLanguage: "python",
          poolReady: 1,
          poolTarget: 2,
          buildMs: 4000,
        },
      ],
    };
    const anonymous = await h.app.inject({ method: "GET", url: "/api/v1/health" });
    expect(anonymous.statusCode).toBe(200);
    expect(anonymous.json()).toEqual({
      message: "Service is healthy",
      version: "0.0.0-test",
      accelerator: "tcg",
      services: { image: { status: "up" }, vmm: { status: "up" } },
    });
    expect(anonymous.body).not.toMatch(/1900000000|Permission denied|secret-team|vms_running/);
    for (const key of ["junk", h.key("team-a").slice(0, -1)]) {
      const bad = await h.app.inject({
        method: "GET",
        url: "/api/v1/health",
        headers: { authorization: `Bearer ${key}` },
      });
      expect(bad.body).not.toMatch(/1900000000|secret-team/);
    }
    const detailed = await h.app.inject({
      method: "GET",
      url: "/api/v1/health",
      headers: { authorization: `Bearer ${h.key("*")}` },
    });
    expect(detailed.json().services.vmm).toMatchObject({
      vms_running: 3,
      templates: [{ image: "registry.internal/secret-team/app:1" }],
    });
  });
});

describe("dev mode", () => {
  it("needs no key and ignores one that is sent", async () => {
    const h = await createHarness({ dev: true });
    try {
      expect((await h.rpc("sandbox.start", start("any-ns"))).statusCode).toBe(200);
      const withJunk = await h.rpc("sandbox.metrics.get", { namespace: "*" }, { key: "junk" });
      expect(withJunk.json().result.sandboxes).toHaveLength(1);
    } finally {
      await h.close();
    }
  });
});
