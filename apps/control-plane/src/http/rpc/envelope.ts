import { MsbError, toJsonRpcError, type JsonRpcErrorObject } from "@msb/errors";

/** JSON-RPC 2.0 ids: a string, a number, or null (when the request's id could not be read). */
export type JsonRpcId = string | number | null;

/** A request the server can dispatch. */
export interface RpcCall {
  readonly kind: "call";
  readonly id: JsonRpcId;
  /** No `id` member at all: the client wants no answer. */
  readonly notification: boolean;
  readonly method: string;
  readonly params: unknown;
}

/** A batch element (or single body) that is not a valid request: answered with this error. */
export interface RpcInvalid {
  readonly kind: "invalid";
  readonly id: JsonRpcId;
  readonly error: MsbError;
}

export interface RpcEnvelope {
  readonly batch: boolean;
  readonly items: readonly (RpcCall | RpcInvalid)[];
}

export type JsonRpcResponse =
  | { readonly jsonrpc: "2.0"; readonly id: JsonRpcId; readonly result: unknown }
  | { readonly jsonrpc: "2.0"; readonly id: JsonRpcId; readonly error: JsonRpcErrorObject };

export function resultResponse(id: JsonRpcId, result: unknown): JsonRpcResponse {
  return { jsonrpc: "2.0", id, result };
}

export function errorResponse(id: JsonRpcId, error: MsbError): JsonRpcResponse {
  return { jsonrpc: "2.0", id, error: toJsonRpcError(error) };
}

/**
 * Reads a parsed JSON body as a JSON-RPC 2.0 request or batch. Never throws for a single
 * malformed request (it becomes an `invalid` item answered with -32600); throws
 * INVALID_REQUEST only for what has no per-request answer: an empty batch or one over
 * `maxBatchSize`.
 */
export function parseEnvelope(body: unknown, maxBatchSize: number): RpcEnvelope {
  if (!Array.isArray(body)) return { batch: false, items: [parseOne(body)] };
  if (body.length === 0) {
    throw new MsbError(
      "INVALID_REQUEST",
      "The batch is empty. Send one request object, or an array with at least one request.",
      { details: { reason: "empty_batch" } },
    );
  }
  if (body.length > maxBatchSize) {
    throw new MsbError(
      "INVALID_REQUEST",
      `The batch has ${body.length} requests; this server takes at most ${maxBatchSize} per batch. Split it.`,
      { details: { reason: "batch_too_large", maxBatchSize } },
    );
  }
  return { batch: true, items: body.map(parseOne) };
}

function parseOne(value: unknown): RpcCall | RpcInvalid {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return invalid(null, "a request must be a JSON object");
  }
  const req = value as Record<string, unknown>;
  const hasId = Object.hasOwn(req, "id");
  const rawId = req["id"];
  const idOk = rawId === null || typeof rawId === "string" || typeof rawId === "number";
  const id: JsonRpcId = hasId && idOk ? rawId : null;
  if (hasId && !idOk) return invalid(null, '"id" must be a string, a number or null');
  if (req["jsonrpc"] !== "2.0") return invalid(id, '"jsonrpc" must be exactly "2.0"');
  if (typeof req["method"] !== "string" || req["method"] === "") {
    return invalid(id, '"method" must be a non-empty string');
  }
  const params = req["params"];
  if (params !== undefined && (params === null || typeof params !== "object")) {
    return invalid(id, '"params" must be an object (or omitted)');
  }
  return { kind: "call", id, notification: !hasId, method: req["method"], params };
}

function invalid(id: JsonRpcId, why: string): RpcInvalid {
  return {
    kind: "invalid",
    id,
    error: new MsbError(
      "INVALID_REQUEST",
      `Not a JSON-RPC 2.0 request: ${why}. Send {"jsonrpc":"2.0","method":"...","params":{...},"id":"1"}.`,
      { details: { reason: why } },
    ),
  };
}
