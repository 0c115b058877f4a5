import { randomUUID } from "node:crypto";
import Fastify, { type FastifyInstance } from "fastify";
import { MsbError } from "@msb/errors";
import type { Logger } from "@msb/runtime";
import type { Authenticator } from "./auth/authenticate.js";
import type { HealthProbe } from "./health.js";
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
}

/**
 * The HTTP application: health, JSON-RPC, MCP. Not listening yet: `main.ts` calls `listen`,
 * tests use `inject()` or `listen({ port: 0 })`.
 */
export function createApp(deps: AppDeps, options: AppOptions): FastifyInstance {
  const app = Fastify({
    loggerInstance: deps.logger,
    bodyLimit: options.bodyLimitBytes,
    genReqId: () => randomUUID(),
    requestIdHeader: false,
    // Long-lived MCP SSE streams must not keep close() waiting.
    forceCloseConnections: true,
  }) as unknown as FastifyInstance;

  installJsonRpcFraming(app, options.bodyLimitBytes);

  app.addHook("onRequest", async (request, reply) => {
    reply.header("x-request-id", request.id);
    if (options.loopbackHostsOnly && !isLoopbackHostHeader(request.headers.host)) {
      const err = new MsbError(
        "INVALID_REQUEST",
        `Host '${request.headers.host ?? ""}' is not accepted: this server listens on loopback only and answers requests addressed to localhost, 127.0.0.1 or [::1] (protection against DNS rebinding).`,
        { details: { reason: "host" } },
      );
      return reply.status(421).send(errorResponse(null, err));
    }
  });

  app.get(HEALTH_PATH, async (request, reply) => {
    const report = await deps.health.check(AbortSignal.timeout(options.healthTimeoutMs));
    if (!report.healthy) request.log.warn({ health: report.body }, "health check: degraded");
    return reply.status(report.healthy ? 200 : 503).send(report.body);
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

function isLoopbackHostHeader(host: string | undefined): boolean {
  if (host === undefined) return false;
  const name = host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.split(":")[0];
  return (
    name === "localhost" ||
    name === "[::1]" ||
    (name !== undefined && /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name))
  );
}
