import { randomUUID } from "node:crypto";
import Fastify, { type FastifyInstance } from "fastify";
import { MsbError } from "@msb/errors";
import type { Logger } from "@msb/runtime";
import type { Authenticator } from "./auth/authenticate.js";
import { publicHealth, type HealthProbe } from "./health.js";
import { registerAttachRoute } from "./http/attach/route.js";
import { installJsonRpcFraming } from "./http/framework.js";
import { HEALTH_PATH } from "./http/routes.js";
import { errorResponse } from "./http/rpc/envelope.js";
import { createRpcMethods } from "./http/rpc/methods.js";
import { registerRpcRoute } from "./http/rpc/route.js";
import { registerMcpRoute } from "./mcp/route.js";
import { createMcpServer } from "./mcp/server.js";
import type { ImageService } from "./images/service.js";
import type { SandboxService } from "./sandboxes/service.js";

export interface AppDeps {
  readonly sandboxes: SandboxService;
  /** The `image.*` methods; absent, they answer METHOD_NOT_FOUND. */
  readonly images?: ImageService;
  readonly auth: Authenticator;
  readonly health: HealthProbe;
  readonly logger: Logger;
}

export interface AppOptions {
  /** Version reported by health and MCP. */
  readonly version: string;
  /** Largest request body (JSON-RPC and MCP). */
  readonly bodyLimitBytes: number;
  readonly maxBatchSize: number;
  readonly mcpMaxSessions: number;
  /** Default 10. */
  readonly mcpMaxSessionsPerKey?: number;
  /** Deadline of the health probe. */
  readonly healthTimeoutMs: number;
  /**
   * Accept only `localhost`, `127.x.x.x` and `[::1]` in the Host header. Set when the server
   * binds loopback: it stops DNS-rebinding pages from driving a local (often --dev) server.
   */
  readonly loopbackHostsOnly: boolean;
  /**
   * Host names (without port) the server answers (`MSB_ALLOWED_HOSTS`); when set, it replaces
   * the loopback rule, so a server reachable by others can refuse DNS-rebound names too.
   */
  readonly allowedHosts?: readonly string[];
  /**
   * Browser origins allowed to call (`MSB_ALLOWED_ORIGINS`, exact `scheme://host[:port]`).
   * A request with any other `Origin` header is refused on every route (the MCP spec requires
   * it for streamable HTTP; a page could otherwise drive a --dev server). Requests without
   * `Origin` (CLI, SDKs, curl) are not affected. Default none.
   */
  readonly allowedOrigins?: readonly string[];
  /** Slow-client limits; defaults as in `config.ts` (`MSB_HTTP_*_TIMEOUT_MS`). */
  readonly http?: HttpTimeouts;
}

/**
 * Limits for slow or stalled clients. They bound receiving a request only: a streamed answer
 * (SSE) or an upgraded WebSocket lasts as long as its run or session.
 */
export interface HttpTimeouts {
  /** Until the request headers are complete. Default 10 s. */
  readonly headersTimeoutMs: number;
  /** Until the whole request (headers and body) is in. Default 60 s. */
  readonly requestTimeoutMs: number;
  /** An idle keep-alive connection between requests. Default 5 s. */
  readonly keepAliveTimeoutMs: number;
}

const DEFAULT_HTTP_TIMEOUTS: HttpTimeouts = {
  headersTimeoutMs: 10_000,
  requestTimeoutMs: 60_000,
  keepAliveTimeoutMs: 5_000,
};

/**
 * The HTTP application: health, JSON-RPC, MCP. Not listening yet: `main.ts` calls `listen`,
 * tests use `inject()` or `listen({ port: 0 })`.
 */
export function createApp(deps: AppDeps, options: AppOptions): FastifyInstance {
  const timeouts = options.http ?? DEFAULT_HTTP_TIMEOUTS;
  const app = Fastify({
    // Stalled headers or bodies get 408 and the connection closed; node checks every second.
    http: {
      headersTimeout: timeouts.headersTimeoutMs,
      requestTimeout: timeouts.requestTimeoutMs,
      keepAliveTimeout: timeouts.keepAliveTimeoutMs,
      connectionsCheckingInterval: Math.min(1_000, timeouts.headersTimeoutMs),
    },
    requestTimeout: timeouts.requestTimeoutMs,
    keepAliveTimeout: timeouts.keepAliveTimeoutMs,
    loggerInstance: deps.logger,
    bodyLimit: options.bodyLimitBytes,
    genReqId: () => randomUUID(),
    requestIdHeader: false,
    // Long-lived MCP SSE streams must not keep close() waiting.
    forceCloseConnections: true,
  }) as unknown as FastifyInstance;

  installJsonRpcFraming(app, options.bodyLimitBytes);
  const allowedOrigins = new Set((options.allowedOrigins ?? []).map(normaliseOrigin));
  const allowedHosts = new Set((options.allowedHosts ?? []).map((h) => h.toLowerCase()));

  app.addHook("onRequest", async (request, reply) => {
    reply.header("x-request-id", request.id);
    if (allowedHosts.size > 0) {
      const name = hostName(request.headers.host);
      if (name === undefined || !allowedHosts.has(name)) {
        const err = new MsbError(
          "INVALID_REQUEST",
          `Host '${request.headers.host ?? ""}' is not accepted: this server answers only ${[...allowedHosts].join(", ")} (MSB_ALLOWED_HOSTS; protection against DNS rebinding).`,
          { details: { reason: "host" } },
        );
        return reply.status(421).send(errorResponse(null, err));
      }
    } else if (options.loopbackHostsOnly && !isLoopbackHostHeader(request.headers.host)) {
      const err = new MsbError(
        "INVALID_REQUEST",
        `Host '${request.headers.host ?? ""}' is not accepted: this server listens on loopback only and answers requests addressed to localhost, 127.0.0.1 or [::1] (protection against DNS rebinding).`,
        { details: { reason: "host" } },
      );
      return reply.status(421).send(errorResponse(null, err));
    }
    const origin = request.headers.origin;
    if (origin !== undefined && !allowedOrigins.has(normaliseOrigin(origin))) {
      const err = new MsbError(
        "AUTH_FORBIDDEN",
        `Origin '${origin}' is not allowed: browser pages may call this server only from the origins the operator lists in MSB_ALLOWED_ORIGINS (${allowedOrigins.size === 0 ? "none" : [...allowedOrigins].join(", ")}). Clients that are not browsers send no Origin.`,
        { details: { reason: "origin", origin } },
      );
      request.log.info({ origin, url: request.url }, "request from a foreign origin refused");
      return reply.status(403).send(errorResponse(null, err));
    }
  });

  // A refused WebSocket upgrade (bad key, foreign Origin) is answered over the raw socket,
  // which the HTTP server no longer tracks: close it, or a client could hold it open forever.
  app.addHook("onResponse", (request, _reply, done) => {
    if (request.headers.upgrade !== undefined && request.raw.socket.writable) {
      request.raw.socket.destroySoon();
    }
    done();
  });

  app.get(HEALTH_PATH, async (request, reply) => {
    const report = await deps.health.check(AbortSignal.timeout(options.healthTimeoutMs));
    if (!report.healthy) request.log.warn({ health: report.body }, "health check: degraded");
    // Details (VM counts, templates, isolation, why a service is down) need a valid key
    // (any namespace; in --dev every caller has one); without one the answer is minimal.
    let detailed = true;
    try {
      deps.auth.authenticate(request.headers);
    } catch {
      detailed = false;
    }
    return reply
      .status(report.healthy ? 200 : 503)
      .send(detailed ? report.body : publicHealth(report.body));
  });

  registerRpcRoute(
    app,
    { methods: createRpcMethods(deps.sandboxes, deps.images), auth: deps.auth },
    { maxBatchSize: options.maxBatchSize },
  );

  registerAttachRoute(app, { sandboxes: deps.sandboxes, auth: deps.auth });

  registerMcpRoute(
    app,
    {
      auth: deps.auth,
      createServer: () =>
        createMcpServer(deps.sandboxes, { version: options.version, logger: deps.logger }),
    },
    { maxSessions: options.mcpMaxSessions, maxSessionsPerKey: options.mcpMaxSessionsPerKey ?? 10 },
  );

  return app;
}

/** Origins compare case-insensitively and without a trailing slash. */
export function normaliseOrigin(origin: string): string {
  return origin.trim().toLowerCase().replace(/\/+$/, "");
}

/** The name of a Host header without its port, lower case (`[::1]` keeps its brackets). */
function hostName(host: string | undefined): string | undefined {
  if (host === undefined) return undefined;
  const name = host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.split(":")[0];
  return name?.toLowerCase();
}

function isLoopbackHostHeader(host: string | undefined): boolean {
  if (host === undefined) return false;
  const name = host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.split(":")[0];
  return (
    name === "localhost" ||
    name === "[::1]" ||
    (name !== undefined && /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name))
  );
}
