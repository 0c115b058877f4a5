export {
  ERROR_CODES,
  ERROR_CODE_INFO,
  GrpcStatus,
  isErrorCode,
  type ErrorCode,
  type ErrorCodeInfo,
} from "./codes.js";
export {
  MsbError,
  isMsbError,
  msbErrorFromWire,
  toMsbError,
  type ErrorDetails,
  type MsbErrorOptions,
} from "./msb-error.js";
export {
  exitCodeOf,
  grpcStatusOf,
  httpStatusOf,
  toJsonRpcError,
  type JsonRpcErrorObject,
} from "./edges.js";
