import { ERROR_CODE_INFO } from "./codes.js";
import type { MsbError } from "./msb-error.js";

/** The JSON-RPC 2.0 error object for an MsbError; `data.code` carries the stable string code. */
export interface JsonRpcErrorObject {
  code: number;
  message: string;
  data: { code: string; [key: string]: unknown };
}

export function toJsonRpcError(err: MsbError): JsonRpcErrorObject {
  return {
    code: ERROR_CODE_INFO[err.code].jsonRpc,
    message: err.message,
    data: { ...err.details, code: err.code },
  };
}

export function httpStatusOf(err: MsbError): number {
  return ERROR_CODE_INFO[err.code].http;
}

export function grpcStatusOf(err: MsbError): number {
  return ERROR_CODE_INFO[err.code].grpc;
}

export function exitCodeOf(err: MsbError): number {
  return ERROR_CODE_INFO[err.code].exit;
}
