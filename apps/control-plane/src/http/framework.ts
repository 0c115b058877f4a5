import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from "fastify";
import { MsbError, httpStatusOf, toMsbError } from "@msb/errors";
import { RPC_METHODS_HINT } from "./routes.js";
import { errorResponse } from "./rpc/envelope.js";

/** HTTP statuses more precise than the code's own (the body is JSON-RPC either way). */
const STATUS_BY_REASON: Readonly<Record<string, number>> = {
  body_too_large: 413,
  content_type: 415,
  http_method: 405,
  route: 404,
};

/**
 * Makes every answer of the server JSON-RPC shaped, even the ones fastify produces itself:
 * JSON parsing with our messages (-32700), any other content type refused (-32600, 415), an
 * oversized body (-32600, 413), unknown routes (404), and unexpected faults (-32603 with a
 * request id that is also in the log).
 */
export function installJsonRpcFraming(app: FastifyInstance, bodyLimitBytes: number): void {
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(
    ["application/json", "application/json-rpc"],
    { parseAs: "string", bodyLimit: bodyLimitBytes },
    (request: FastifyRequest, body: string | Buffer, done) => {
      const text = typeof body === "string" ? body : body.toString("utf8");
      if (text.trim() === "") {
        // A DELETE (MCP session end) may carry a content type and no body.
        if (request.method === "POST") done(parseError("the body is empty"), undefined);
        else done(null, undefined);
        return;
      }
      try {
        done(null, JSON.parse(text));
      } catch (err) {
        done(parseError((err as Error).message), undefined);
      }
    },
  );
  app.addContentTypeParser("*", (request: FastifyRequest, _payload, done) => {
    const type = request.headers["content-type"] ?? "(none)";
    done(
      new MsbError(
        "INVALID_REQUEST",
        `Content-Type '${type}' is not supported. Send the body as JSON with 'Content-Type: application/json'.`,
        { details: { reason: "content_type", contentType: type } },
      ),
      undefined,
    );
  });

  app.setErrorHandler(
    (error: FastifyError | MsbError, request: FastifyRequest, reply: FastifyReply) => {
      const err = frameworkError(error, request.id, bodyLimitBytes);
      if (err.code === "INTERNAL") {
        request.log.error({ err: error, requestId: request.id }, "internal error");
      } else {
        request.log.info({ code: err.code, message: err.message }, "request rejected");
      }
      const reason = err.details["reason"];
      const status =
        typeof reason === "string" && reason in STATUS_BY_REASON
          ? STATUS_BY_REASON[reason]!
          : httpStatusOf(err);
      return reply.status(status).send(errorResponse(null, err));
    },
  );

  app.setNotFoundHandler((request: FastifyRequest, reply: FastifyReply) => {
    const err = new MsbError(
      "METHOD_NOT_FOUND",
      `No route ${request.method} ${request.url.split("?")[0]}. msb serves POST /api/v1/rpc (JSON-RPC: ${RPC_METHODS_HINT}), GET /api/v1/health and /mcp.`,
      { details: { reason: "route" } },
    );
    return reply.status(404).send(errorResponse(null, err));
  });
}

function parseError(why: string): MsbError {
  return new MsbError(
    "PARSE_ERROR",
    `The request body is not valid JSON (${why}). Send a UTF-8 JSON body with 'Content-Type: application/json'.`,
  );
}

/** fastify's own errors and anything thrown, as an MsbError the caller may see. */
function frameworkError(error: unknown, requestId: string, bodyLimitBytes: number): MsbError {
  if (error instanceof MsbError) return error;
  const e = error as Partial<FastifyError>;
  if (e.code === "FST_ERR_CTP_BODY_TOO_LARGE") {
    return new MsbError(
      "INVALID_REQUEST",
      `The request body is larger than this server accepts (${bodyLimitBytes} bytes). Send less (e.g. split a batch, or write big files with a command), or ask the operator to raise MSB_BODY_LIMIT_BYTES.`,
      { details: { reason: "body_too_large", limitBytes: bodyLimitBytes } },
    );
  }
  if (e.code === "FST_ERR_CTP_INVALID_MEDIA_TYPE") {
    return new MsbError(
      "INVALID_REQUEST",
      "This Content-Type is not supported. Send the body as JSON with 'Content-Type: application/json'.",
      { details: { reason: "content_type" } },
    );
  }
  if (e.code === "FST_ERR_CTP_EMPTY_JSON_BODY" || e.code === "FST_ERR_CTP_INVALID_JSON_BODY") {
    return parseError(e.message ?? "invalid JSON");
  }
  if (typeof e.statusCode === "number" && e.statusCode >= 400 && e.statusCode < 500) {
    return new MsbError(
      "INVALID_REQUEST",
      `The HTTP request was rejected: ${e.message ?? "bad request"}. Check the method, headers and body.`,
      { details: { reason: e.code ?? "http" } },
    );
  }
  return toMsbError(error, requestId);
}
