import type { FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { MsbError, httpStatusOf, toMsbError } from "@msb/errors";
import type { Authenticator } from "../../auth/authenticate.js";
import type { Caller } from "../../auth/caller.js";
import type { ProgressObserver } from "../../images/service.js";
import type { RunObserver } from "../../sandboxes/service.js";
import { RPC_METHOD_NAMES, RPC_METHODS_HINT, RPC_PATH } from "../routes.js";
import {
  errorResponse,
  parseEnvelope,
  resultResponse,
  type JsonRpcResponse,
  type RpcCall,
  type RpcInvalid,
} from "./envelope.js";
import { STREAMABLE_METHODS, type RpcHandler } from "./methods.js";
import { createSseAnswer, wantsEventStream } from "./sse.js";

export interface RpcRouteDeps {
  readonly methods: ReadonlyMap<string, RpcHandler>;
  readonly auth: Authenticator;
}

export interface RpcRouteOptions {
  readonly maxBatchSize: number;
}

/**
 * `POST /api/v1/rpc`: JSON-RPC 2.0 with batches and notifications. HTTP status: 200 for a
 * result or a batch, the error's own status for a single error (401, 404, 409, …), 204 when
 * nothing is owed (notifications only). The calls of a batch run concurrently. A single
 * repl.run / command.run with `Accept: text/event-stream` streams its output as server-sent
 * events once the run started (docs/streaming.md); image.pull / build / push stream progress.
 */
export function registerRpcRoute(
  app: FastifyInstance,
  deps: RpcRouteDeps,
  options: RpcRouteOptions,
): void {
  app.post(RPC_PATH, async (request, reply) => {
    const envelope = parseEnvelope(request.body, options.maxBatchSize);
    let caller: Caller | MsbError;
    try {
      caller = deps.auth.authenticate(request.headers);
    } catch (err) {
      caller = toMsbError(err, request.id);
    }
    const signal = clientSignal(request, reply);
    const first = envelope.items[0];
    const sse =
      !envelope.batch &&
      first?.kind === "call" &&
      !first.notification &&
      STREAMABLE_METHODS.has(first.method) &&
      !(caller instanceof MsbError) &&
      wantsEventStream(request.headers.accept)
        ? createSseAnswer(request, reply)
        : undefined;
    const answers = await Promise.all(
      envelope.items.map((item) =>
        answer(
          item,
          caller,
          { signal, observer: sse?.observer, progress: sse?.progress },
          deps.methods,
          request,
        ),
      ),
    );
    if (sse?.opened === true) {
      // Headers are out: the outcome, success or failure, travels in the result event.
      sse.finish(answers[0]!.response);
      return reply;
    }
    const responses = answers.filter((a): a is Answer => a !== undefined);

    if (caller instanceof MsbError && responses.length === 0) {
      // Notifications with a bad key: nothing ran, and the client is told so.
      return reply.status(httpStatusOf(caller)).send(errorResponse(null, caller));
    }
    if (responses.length === 0) return reply.status(204).send();
    if (envelope.batch) return reply.status(200).send(responses.map((a) => a.response));
    const only = responses[0]!;
    return reply
      .status(only.error === undefined ? 200 : httpStatusOf(only.error))
      .send(only.response);
  });

  // Framework-level answers for the other HTTP methods are JSON-RPC too.
  app.route({
    method: ["GET", "PUT", "PATCH", "DELETE"],
    url: RPC_PATH,
    handler: (request, reply) => {
      const err = new MsbError(
        "INVALID_REQUEST",
        `${request.method} is not supported here: send JSON-RPC requests with POST ${RPC_PATH}.`,
        { details: { reason: "http_method" } },
      );
      return reply.status(405).header("allow", "POST").send(errorResponse(null, err));
    },
  });
}

interface Answer {
  readonly response: JsonRpcResponse;
  /** Set for error responses: decides the HTTP status of a single call. */
  readonly error?: MsbError;
}

async function answer(
  item: RpcCall | RpcInvalid,
  caller: Caller | MsbError,
  {
    signal,
    observer,
    progress,
  }: {
    signal: AbortSignal;
    observer: RunObserver | undefined;
    progress: ProgressObserver | undefined;
  },
  methods: ReadonlyMap<string, RpcHandler>,
  request: FastifyRequest,
): Promise<Answer | undefined> {
  if (item.kind === "invalid") {
    return { response: errorResponse(item.id, item.error), error: item.error };
  }
  const reply = (err: MsbError): Answer | undefined =>
    item.notification ? undefined : { response: errorResponse(item.id, err), error: err };
  if (caller instanceof MsbError) return reply(caller);
  const handler = methods.get(item.method);
  if (handler === undefined) {
    return reply(
      new MsbError(
        "METHOD_NOT_FOUND",
        `Unknown method '${item.method}'. Available methods: ${RPC_METHODS_HINT}.`,
        { details: { method: item.method, methods: [...RPC_METHOD_NAMES] } },
      ),
    );
  }
  try {
    const result = await handler(item.params, {
      caller,
      signal,
      ...(observer === undefined ? {} : { observer }),
      ...(progress === undefined ? {} : { progress }),
    });
    return item.notification ? undefined : { response: resultResponse(item.id, result) };
  } catch (thrown) {
    const err = toMsbError(thrown, request.id);
    if (!(thrown instanceof MsbError) || err.code === "INTERNAL") {
      request.log.error(
        { err: thrown, requestId: request.id, method: item.method },
        "internal error in a JSON-RPC call",
      );
    } else if (!err.isClientError) {
      request.log.warn({ code: err.code, method: item.method, msg: err.message }, "call failed");
    }
    return reply(err);
  }
}

/** Aborts when the HTTP client disconnects before its answer was sent. */
function clientSignal(request: FastifyRequest, reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once("close", () => {
    if (!reply.raw.writableFinished) {
      controller.abort(new MsbError("CANCELLED", `The client of request ${request.id} went away.`));
    }
  });
  return controller.signal;
}
