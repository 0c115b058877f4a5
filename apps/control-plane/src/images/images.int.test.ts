/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-explicit-any --
   These tests read parsed JSON bodies (`res.json()` is `any`); the matchers check their shape. */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { FastifyInstance, LightMyRequestResponse } from "fastify";
import { MsbError } from "@msb/errors";
import { createApiKey } from "@msb/keys";
import { pino } from "pino";
import { afterEach, describe, expect, it } from "vitest";
import { createApp } from "../app.js";
import { createAuthenticator } from "../auth/authenticate.js";
import { loadConfig } from "../config.js";
import { createHealthProbe } from "../health.js";
import { createSandboxPolicy } from "../sandboxes/policy.js";
import { createSandboxService } from "../sandboxes/service.js";
import { openSandboxStore, type SandboxStore } from "../sandboxes/store.js";
import { FakeImageBackend, FakeVmmBackend } from "../test-support/fakes.js";
import { FakeImageStore, progress, storedImage } from "../test-support/fake-image-store.js";
import { createImageService } from "./service.js";

const SSE = { accept: "text/event-stream" };
const PY = "docker.io/microsandbox/python:latest";

interface Server {
  readonly app: FastifyInstance;
  readonly images: FakeImageStore;
  key(namespace: string): string;
  rpc(
    method: string,
    params: unknown,
    options?: { key?: string; headers?: Record<string, string> },
  ): Promise<LightMyRequestResponse>;
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0)) await c();
});

/** The real HTTP app (auth, JSON-RPC, SSE) with the image store faked. */
async function server(options: { dev: boolean }): Promise<Server> {
  const dir = await mkdtemp(join(tmpdir(), "msb-cp-images-"));
  const config = loadConfig(
    { MSB_HOME: join(dir, ".msb"), MSB_DEV: options.dev ? "1" : "0" },
    { homeDir: dir },
  );
  const store: SandboxStore = openSandboxStore(join(config.msbHome, "msb.db"));
  const logger = pino({ level: "silent" });
  const image = new FakeImageBackend();
  const vmm = new FakeVmmBackend();
  const images = new FakeImageStore();
  const secret = randomBytes(32).toString("hex");
  const sandboxes = createSandboxService(
    {
      store,
      image,
      vmm,
      policy: createSandboxPolicy(config.policy),
      logger,
    },
    { outputLimitBytes: 1 << 20, runDefaultMs: 60_000, runMaxMs: 60_000 },
  );
  const app = createApp(
    {
      sandboxes,
      images: createImageService({ store: images }),
      auth: createAuthenticator({ dev: options.dev, secret }),
      health: createHealthProbe({ image, vmm }, { version: "0.0.0-test" }),
      logger,
    },
    {
      version: "0.0.0-test",
      bodyLimitBytes: 1 << 20,
      maxBatchSize: 10,
      mcpMaxSessions: 2,
      healthTimeoutMs: 2_000,
      loopbackHostsOnly: true,
    },
  );
  await app.ready();
  cleanups.push(async () => {
    await app.close();
    store.close();
    await rm(dir, { recursive: true, force: true });
  });
  return {
    app,
    images,
    key: (namespace) => createApiKey(secret, { namespace }),
    rpc: (method, params, rpcOptions = {}) =>
      app.inject({
        method: "POST",
        url: "/api/v1/rpc",
        headers: {
          "content-type": "application/json",
          ...(rpcOptions.key === undefined ? {} : { authorization: `Bearer ${rpcOptions.key}` }),
          ...rpcOptions.headers,
        },
        body: JSON.stringify({ jsonrpc: "2.0", method, params, id: 1 }),
      }),
  };
}

function events(body: string): { event: string; data: any }[] {
  return body
    .split("\n\n")
    .filter((block) => block.startsWith("event: "))
    .map((block) => {
      const [eventLine, dataLine] = block.split("\n") as [string, string];
      return { event: eventLine.slice(7), data: JSON.parse(dataLine.slice(6)) };
    });
}

describe("image.* JSON-RPC methods", () => {
  it("pull streams progress events, then the image as the result event", async () => {
    const s = await server({ dev: true });
    s.images.remote.set("microsandbox/python", storedImage(PY));
    s.images.progressEvents = [
      progress({ phase: "resolving", message: "resolving microsandbox/python" }),
      progress({ digest: "sha256:l1", currentBytes: 500, currentTotalBytes: 1000 }),
      progress({ digest: "sha256:l1", currentBytes: 1000, currentTotalBytes: 1000 }),
    ];
    const res = await s.rpc("image.pull", { reference: "microsandbox/python" }, { headers: SSE });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe("text/event-stream; charset=utf-8");
    const evs = events(res.body);
    expect(evs.map((e) => e.event)).toEqual(["progress", "progress", "progress", "result"]);
    expect(evs[1]!.data).toMatchObject({
      phase: "downloading",
      digest: "sha256:l1",
      current_bytes: 500,
      current_total_bytes: 1000,
    });
    expect(evs[3]!.data.result).toMatchObject({
      reference: PY,
      digest: `sha256:${"ab".repeat(32)}`,
      size_bytes: 1000,
      stored_at: "2026-11-27T00:00:00.000Z",
    });
  });

  it("pull answers plain JSON without Accept: text/event-stream", async () => {
    const s = await server({ dev: true });
    s.images.remote.set("microsandbox/python", storedImage(PY));
    s.images.progressEvents = [progress({ digest: "sha256:l1", currentBytes: 1 })];
    const res = await s.rpc("image.pull", { reference: "microsandbox/python" });
    expect(res.headers["content-type"]).toMatch(/^application\/json/);
    expect(res.json().result.reference).toBe(PY);
  });

  it("a missing image is IMAGE_NOT_FOUND as plain JSON (nothing was streamed yet)", async () => {
    const s = await server({ dev: true });
    const res = await s.rpc("image.pull", { reference: "nobody/nothing" }, { headers: SSE });
    expect(res.statusCode).toBe(404);
    expect(res.headers["content-type"]).toMatch(/^application\/json/);
    expect(res.json().error.data.code).toBe("IMAGE_NOT_FOUND");
  });

  it("a failure after progress started arrives as the result event", async () => {
    const s = await server({ dev: true });
    s.images.remote.set("microsandbox/python", storedImage(PY));
    s.images.progressEvents = [progress({ digest: "sha256:l1", currentBytes: 1 })];
    s.images.failWith = new MsbError("REGISTRY_UNREACHABLE", "Registry 127.0.0.1:1 cannot be reached.");
    const res = await s.rpc("image.pull", { reference: "microsandbox/python" }, { headers: SSE });
    const last = events(res.body).at(-1)!;
    expect(last.event).toBe("result");
    expect(last.data.error.data.code).toBe("REGISTRY_UNREACHABLE");
  });

  it("list, remove and push answer with the documented shapes", async () => {
    const s = await server({ dev: true });
    s.images.images.set(PY, storedImage(PY));
    const list = await s.rpc("image.list", {});
    expect(list.json().result).toEqual({
      images: [
        {
          reference: PY,
          digest: `sha256:${"ab".repeat(32)}`,
          size_bytes: 1000,
          stored_at: "2026-11-27T00:00:00.000Z",
        },
      ],
    });
    const push = await s.rpc("image.push", { reference: PY, target: "127.0.0.1:5000/py:1" });
    expect(push.json().result).toEqual({
      reference: PY,
      target: "127.0.0.1:5000/py:1",
      digest: `sha256:${"ab".repeat(32)}`,
    });
    const rm1 = await s.rpc("image.remove", { reference: PY });
    expect(rm1.json().result).toEqual({
      reference: PY,
      removed_digests: [`sha256:${"ab".repeat(32)}`],
    });
    const rm2 = await s.rpc("image.remove", { reference: PY });
    expect(rm2.json().error.data.code).toBe("IMAGE_NOT_FOUND");
    expect((await s.rpc("image.list", {})).json().result).toEqual({ images: [] });
  });

  it("build sends absolute definition dirs with tag and no_cache, streams progress", async () => {
    const s = await server({ dev: true });
    s.images.progressEvents = [progress({ phase: "building", message: "step 1/3" })];
    const res = await s.rpc(
      "image.build",
      { definition_dir: "/src/images/python", tag: "team/py:1", no_cache: true },
      { headers: SSE },
    );
    const evs = events(res.body);
    expect(evs[0]).toMatchObject({ event: "progress", data: { message: "step 1/3" } });
    expect(evs.at(-1)!.data.result.reference).toBe("team/py:1");
    expect(s.images.calls).toContainEqual({
      method: "build",
      args: [{ definitionDir: "/src/images/python", tag: "team/py:1", noCache: true }],
    });
  });

  it("refuses relative definition dirs and bad params with INVALID_PARAMS", async () => {
    const s = await server({ dev: true });
    const rel = await s.rpc("image.build", { definition_dir: "images/python" });
    expect(rel.statusCode).toBe(400);
    expect(rel.json().error.data.code).toBe("INVALID_PARAMS");
    expect(rel.json().error.message).toContain("absolute");
    const bad = await s.rpc("image.pull", { reference: "" });
    expect(bad.json().error.data.code).toBe("INVALID_PARAMS");
    const list = await s.rpc("image.list", []);
    expect(list.json().error.data.code).toBe("INVALID_PARAMS");
    expect(s.images.calls.filter((c) => c.method !== "list")).toEqual([]);
  });
});

describe("image.* authorisation", () => {
  const calls: [string, Record<string, unknown>][] = [
    ["image.pull", { reference: "microsandbox/python" }],
    ["image.list", {}],
    ["image.build", { definition_dir: "/src/images/python" }],
    ["image.push", { reference: PY, target: "127.0.0.1:5000/py" }],
    // Last: the dev-mode test runs them in order on one store.
    ["image.remove", { reference: PY }],
  ];

  it.each(calls)("%s: no key → AUTH_REQUIRED, namespace key → AUTH_FORBIDDEN, * key → runs", async (method, params) => {
    const s = await server({ dev: false });
    s.images.remote.set("microsandbox/python", storedImage(PY));
    s.images.images.set(PY, storedImage(PY));

    const none = await s.rpc(method, params);
    expect(none.statusCode).toBe(401);
    expect(none.json().error.data.code).toBe("AUTH_REQUIRED");

    const bound = await s.rpc(method, params, { key: s.key("team"), headers: SSE });
    expect(bound.statusCode).toBe(403);
    expect(bound.json().error.data.code).toBe("AUTH_FORBIDDEN");
    expect(bound.json().error.message).toContain("all-namespaces key");
    expect(s.images.calls).toEqual([]);

    const all = await s.rpc(method, params, { key: s.key("*") });
    expect(all.statusCode, all.body).toBe(200);
    expect(all.json().result).toBeDefined();
  });

  it("dev mode allows every image method without a key", async () => {
    const s = await server({ dev: true });
    s.images.remote.set("microsandbox/python", storedImage(PY));
    s.images.images.set(PY, storedImage(PY));
    for (const [method, params] of calls) {
      const res = await s.rpc(method, params);
      expect(res.statusCode, `${method}: ${res.body}`).toBe(200);
    }
  });
});
