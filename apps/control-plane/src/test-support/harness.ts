import { randomBytes } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import type { FastifyInstance, LightMyRequestResponse } from "fastify";
import { createApiKey, type CreateApiKeyOptions } from "@msb/keys";
import { pino } from "pino";
import { createApp } from "../app.js";
import { createAuthenticator } from "../auth/authenticate.js";
import { loadConfig, type ControlPlaneConfig } from "../config.js";
import { createHealthProbe } from "../health.js";
import { FakeImageStore } from "./fake-image-store.js";
import { createImageService } from "../images/service.js";
import { createSandboxPolicy } from "../sandboxes/policy.js";
import { createSandboxService, type SandboxService } from "../sandboxes/service.js";
import { openSandboxStore, type SandboxStore } from "../sandboxes/store.js";
import { FakeImageBackend, FakeVmmBackend } from "./fakes.js";

export interface HarnessOptions {
  readonly dev?: boolean;
  /** Extra environment for loadConfig (MSB_* variables). */
  readonly env?: Readonly<Record<string, string>>;
  readonly now?: () => number;
  /** Reuse a home (and its msb.db) from an earlier harness: a control plane restart. */
  readonly home?: string;
  readonly vmm?: FakeVmmBackend;
  /** Serve the `image.*` methods from an in-memory image store. */
  readonly images?: boolean;
  /** pino level of the captured log; default "info". */
  readonly logLevel?: string;
}

export interface Harness {
  readonly app: FastifyInstance;
  readonly config: ControlPlaneConfig;
  readonly image: FakeImageBackend;
  readonly vmm: FakeVmmBackend;
  /** The image store behind `image.*` (only with `images: true`). */
  readonly imageStore: FakeImageStore | undefined;
  readonly service: SandboxService;
  readonly store: SandboxStore;
  /** The user's home directory (a volume root in dev mode); MSB_HOME is `<home>/.msb`. */
  readonly home: string;
  readonly secret: string;
  /** Every log line, parsed. */
  readonly logs: Record<string, unknown>[];
  key(namespace: string, options?: Omit<CreateApiKeyOptions, "namespace">): string;
  /** POST /api/v1/rpc with one request; `key` becomes a Bearer header. */
  rpc(
    method: string,
    params?: unknown,
    options?: { key?: string; id?: string | number; headers?: Record<string, string> },
  ): Promise<LightMyRequestResponse>;
  post(body: string, headers?: Record<string, string>): Promise<LightMyRequestResponse>;
  /** Closes the app and the database; `keepHome` leaves the files for a restart. */
  close(options?: { keepHome?: boolean }): Promise<void>;
}

/** A control plane on real SQLite in a temp MSB_HOME, with fake backends. */
export async function createHarness(options: HarnessOptions = {}): Promise<Harness> {
  const home = options.home ?? (await mkdtemp(join(tmpdir(), "msb-cp-")));
  const config = loadConfig(
    {
      MSB_HOME: join(home, ".msb"),
      MSB_DEV: options.dev === true ? "1" : "0",
      ...options.env,
    },
    { homeDir: home },
  );
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split("\n")) {
        if (line.trim() !== "") logs.push(JSON.parse(line) as Record<string, unknown>);
      }
      done();
    },
  });
  const logger = pino({ level: options.logLevel ?? "info" }, sink);
  const secret = randomBytes(32).toString("hex");
  const image = new FakeImageBackend();
  const vmm = options.vmm ?? new FakeVmmBackend();
  const store = openSandboxStore(join(config.msbHome, "msb.db"));
  const service = createSandboxService(
    { store, image, vmm, policy: createSandboxPolicy(config.policy), logger },
    {
      outputLimitBytes: config.limits.outputLimitBytes,
      runDefaultMs: config.timeouts.runDefaultMs,
      runMaxMs: config.timeouts.runMaxMs,
    },
  );
  const imageStore = options.images === true ? new FakeImageStore() : undefined;
  const app = createApp(
    {
      sandboxes: service,
      ...(imageStore === undefined ? {} : { images: createImageService({ store: imageStore }) }),
      auth: createAuthenticator({
        dev: config.dev,
        secret,
        ...(options.now === undefined ? {} : { now: options.now }),
      }),
      health: createHealthProbe({ image, vmm }, { version: "0.0.0-test" }),
      logger,
    },
    {
      version: "0.0.0-test",
      bodyLimitBytes: config.limits.bodyLimitBytes,
      maxBatchSize: config.limits.maxBatchSize,
      mcpMaxSessions: config.limits.mcpMaxSessions,
      mcpMaxSessionsPerKey: config.limits.mcpMaxSessionsPerKey,
      allowedOrigins: config.allowedOrigins,
      allowedHosts: config.allowedHosts,
      http: config.http,
      healthTimeoutMs: 2_000,
      loopbackHostsOnly: true,
    },
  );
  await app.ready();

  const post = (body: string, headers: Record<string, string> = {}) =>
    app.inject({
      method: "POST",
      url: "/api/v1/rpc",
      headers: { "content-type": "application/json", ...headers },
      body,
    });

  return {
    app,
    config,
    image,
    vmm,
    imageStore,
    service,
    store,
    home,
    secret,
    logs,
    key: (namespace, keyOptions = {}) => createApiKey(secret, { namespace, ...keyOptions }),
    rpc: (method, params, rpcOptions = {}) =>
      post(JSON.stringify({ jsonrpc: "2.0", method, params, id: rpcOptions.id ?? "1" }), {
        ...(rpcOptions.key === undefined ? {} : { authorization: `Bearer ${rpcOptions.key}` }),
        ...rpcOptions.headers,
      }),
    post,
    async close(closeOptions = {}) {
      await app.close();
      store.close();
      if (closeOptions.keepHome !== true) await rm(home, { recursive: true, force: true });
    },
  };
}
