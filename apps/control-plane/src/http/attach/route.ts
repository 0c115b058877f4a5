import websocket from "@fastify/websocket";
import type { FastifyInstance, FastifyRequest } from "fastify";
import { MsbError, httpStatusOf, toMsbError } from "@msb/errors";
import type { Authenticator } from "../../auth/authenticate.js";
import type { Caller } from "../../auth/caller.js";
import type { SandboxService } from "../../sandboxes/service.js";
import { ATTACH_PATH } from "../routes.js";
import { errorResponse } from "../rpc/envelope.js";
import { runAttachSession } from "./session.js";

export interface AttachRouteDeps {
  readonly sandboxes: SandboxService;
  readonly auth: Authenticator;
}

/** Largest WebSocket message the server takes (stdin chunks are far smaller). */
const MAX_MESSAGE_BYTES = 1024 * 1024;

/**
 * `GET /api/v1/sandboxes/attach` upgraded to a WebSocket: an interactive process in a sandbox
 * (docs/api.md, "Interactive sessions"). The key is checked before the upgrade, exactly as
 * for /api/v1/rpc; a refusal is an HTTP answer with a JSON-RPC error body. Everything after
 * the upgrade (the start message, the sandbox lookup, the run) is reported in frames.
 */
export function registerAttachRoute(app: FastifyInstance, deps: AttachRouteDeps): void {
  const callers = new WeakMap<FastifyRequest, Caller>();
  void app.register(async (scope) => {
    await scope.register(websocket, { options: { maxPayload: MAX_MESSAGE_BYTES } });
    scope.route({
      method: "GET",
      url: ATTACH_PATH,
      preHandler: async (request, reply) => {
        let err: MsbError | undefined;
        if (!request.ws) {
          err = new MsbError(
            "INVALID_REQUEST",
            `${ATTACH_PATH} is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket), e.g. \`msb shell\`. For one-off commands use POST /api/v1/rpc sandbox.command.run.`,
            { details: { reason: "upgrade_required" } },
          );
        } else {
          try {
            callers.set(request, deps.auth.authenticate(request.headers));
          } catch (thrown) {
            err = toMsbError(thrown, request.id);
          }
        }
        if (err !== undefined) {
          request.log.info({ code: err.code }, "attach refused");
          const status = err.details["reason"] === "upgrade_required" ? 426 : httpStatusOf(err);
          return reply.status(status).send(errorResponse(null, err));
        }
      },
      // Only reached without an upgrade, which preHandler has already answered.
      handler: async (_request, reply) => reply,
      wsHandler: (socket, request) => {
        const caller = callers.get(request);
        if (caller === undefined) {
          socket.close(1011, "not authenticated");
          return;
        }
        runAttachSession(socket, caller, deps.sandboxes, request.log, request.id);
      },
    });
  });
}
