/**
 * The closed set of msb error codes. Each code is mapped exactly once per edge (JSON-RPC,
 * gRPC, HTTP, CLI exit code) in this table, and documented in `docs/errors.md` (a test keeps
 * the two in step). Add a code here, a row in the table and a section in the doc together.
 */
export const ERROR_CODES = [
  "PARSE_ERROR",
  "INVALID_REQUEST",
  "METHOD_NOT_FOUND",
  "INVALID_PARAMS",
  "INTERNAL",
  "AUTH_REQUIRED",
  "AUTH_INVALID",
  "AUTH_FORBIDDEN",
  "SANDBOX_NOT_FOUND",
  "SANDBOX_STOPPED",
  "SANDBOX_EXISTS",
  "SANDBOX_BUSY",
  "POLICY_DENIED",
  "IMAGE_REFERENCE_INVALID",
  "IMAGE_NOT_FOUND",
  "IMAGE_PULL_FAILED",
  "IMAGE_DIGEST_MISMATCH",
  "IMAGE_LAYER_INVALID",
  "IMAGE_DEFINITION_INVALID",
  "IMAGE_BUILD_FAILED",
  "IMAGE_PUSH_FAILED",
  "REGISTRY_UNREACHABLE",
  "REGISTRY_AUTH_FAILED",
  "ROOTFS_BUILD_FAILED",
  "KERNEL_MISSING",
  "VM_BOOT_FAILED",
  "VM_BOOT_TIMEOUT",
  "VM_DIED",
  "AGENT_PROTOCOL_ERROR",
  "AGENT_TIMEOUT",
  "AGENT_DISCONNECTED",
  "REPL_START_FAILED",
  "TIMEOUT",
  "CANCELLED",
  "CAPACITY_EXHAUSTED",
  "QUOTA_EXCEEDED",
  "SERVICE_UNAVAILABLE",
  "CONFIG_INVALID",
  "SANDBOXFILE_INVALID",
  "SERVER_NOT_RUNNING",
  "SERVER_ALREADY_RUNNING",
  "PORT_IN_USE",
  "FILE_NOT_FOUND",
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** gRPC status codes as numbers, so this library never pulls in a gRPC runtime. */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ABORTED: 10,
  OUT_OF_RANGE: 11,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  DATA_LOSS: 15,
  UNAUTHENTICATED: 16,
} as const;

export interface ErrorCodeInfo {
  /** JSON-RPC error code (SPEC.md). */
  readonly jsonRpc: number;
  /** HTTP status of the JSON-RPC answer carrying this error. */
  readonly http: number;
  /** gRPC status between services. */
  readonly grpc: number;
  /** `msb` CLI exit code (see docs/errors.md, "Exit codes"). */
  readonly exit: number;
}

const g = GrpcStatus;

/** One row per code: every edge mapping lives here and nowhere else. */
export const ERROR_CODE_INFO: Readonly<Record<ErrorCode, ErrorCodeInfo>> = {
  PARSE_ERROR: { jsonRpc: -32700, http: 400, grpc: g.INVALID_ARGUMENT, exit: 2 },
  INVALID_REQUEST: { jsonRpc: -32600, http: 400, grpc: g.INVALID_ARGUMENT, exit: 2 },
  METHOD_NOT_FOUND: { jsonRpc: -32601, http: 404, grpc: g.UNIMPLEMENTED, exit: 2 },
  INVALID_PARAMS: { jsonRpc: -32602, http: 400, grpc: g.INVALID_ARGUMENT, exit: 2 },
  INTERNAL: { jsonRpc: -32603, http: 500, grpc: g.INTERNAL, exit: 1 },
  AUTH_REQUIRED: { jsonRpc: -32002, http: 401, grpc: g.UNAUTHENTICATED, exit: 3 },
  AUTH_INVALID: { jsonRpc: -32002, http: 401, grpc: g.UNAUTHENTICATED, exit: 3 },
  AUTH_FORBIDDEN: { jsonRpc: -32002, http: 403, grpc: g.PERMISSION_DENIED, exit: 3 },
  SANDBOX_NOT_FOUND: { jsonRpc: -32004, http: 404, grpc: g.NOT_FOUND, exit: 4 },
  SANDBOX_STOPPED: { jsonRpc: -32004, http: 409, grpc: g.FAILED_PRECONDITION, exit: 4 },
  SANDBOX_EXISTS: { jsonRpc: -32005, http: 409, grpc: g.ALREADY_EXISTS, exit: 5 },
  SANDBOX_BUSY: { jsonRpc: -32006, http: 409, grpc: g.ABORTED, exit: 5 },
  POLICY_DENIED: { jsonRpc: -32602, http: 403, grpc: g.PERMISSION_DENIED, exit: 2 },
  IMAGE_REFERENCE_INVALID: { jsonRpc: -32602, http: 400, grpc: g.INVALID_ARGUMENT, exit: 2 },
  IMAGE_NOT_FOUND: { jsonRpc: -32010, http: 404, grpc: g.NOT_FOUND, exit: 6 },
  IMAGE_PULL_FAILED: { jsonRpc: -32011, http: 502, grpc: g.UNAVAILABLE, exit: 6 },
  IMAGE_DIGEST_MISMATCH: { jsonRpc: -32011, http: 502, grpc: g.DATA_LOSS, exit: 6 },
  IMAGE_LAYER_INVALID: { jsonRpc: -32012, http: 422, grpc: g.INVALID_ARGUMENT, exit: 6 },
  IMAGE_DEFINITION_INVALID: { jsonRpc: -32602, http: 400, grpc: g.INVALID_ARGUMENT, exit: 2 },
  IMAGE_BUILD_FAILED: { jsonRpc: -32013, http: 500, grpc: g.ABORTED, exit: 6 },
  IMAGE_PUSH_FAILED: { jsonRpc: -32014, http: 502, grpc: g.UNAVAILABLE, exit: 6 },
  REGISTRY_UNREACHABLE: { jsonRpc: -32011, http: 502, grpc: g.UNAVAILABLE, exit: 6 },
  REGISTRY_AUTH_FAILED: { jsonRpc: -32011, http: 502, grpc: g.PERMISSION_DENIED, exit: 6 },
  ROOTFS_BUILD_FAILED: { jsonRpc: -32015, http: 500, grpc: g.INTERNAL, exit: 6 },
  KERNEL_MISSING: { jsonRpc: -32020, http: 503, grpc: g.FAILED_PRECONDITION, exit: 7 },
  VM_BOOT_FAILED: { jsonRpc: -32021, http: 500, grpc: g.ABORTED, exit: 7 },
  VM_BOOT_TIMEOUT: { jsonRpc: -32022, http: 504, grpc: g.DEADLINE_EXCEEDED, exit: 7 },
  VM_DIED: { jsonRpc: -32004, http: 409, grpc: g.FAILED_PRECONDITION, exit: 7 },
  AGENT_PROTOCOL_ERROR: { jsonRpc: -32023, http: 502, grpc: g.DATA_LOSS, exit: 7 },
  AGENT_TIMEOUT: { jsonRpc: -32024, http: 504, grpc: g.DEADLINE_EXCEEDED, exit: 7 },
  AGENT_DISCONNECTED: { jsonRpc: -32004, http: 409, grpc: g.UNAVAILABLE, exit: 7 },
  REPL_START_FAILED: { jsonRpc: -32025, http: 502, grpc: g.FAILED_PRECONDITION, exit: 7 },
  TIMEOUT: { jsonRpc: -32030, http: 504, grpc: g.DEADLINE_EXCEEDED, exit: 8 },
  CANCELLED: { jsonRpc: -32031, http: 499, grpc: g.CANCELLED, exit: 130 },
  CAPACITY_EXHAUSTED: { jsonRpc: -32032, http: 503, grpc: g.RESOURCE_EXHAUSTED, exit: 9 },
  QUOTA_EXCEEDED: { jsonRpc: -32034, http: 429, grpc: g.RESOURCE_EXHAUSTED, exit: 9 },
  SERVICE_UNAVAILABLE: { jsonRpc: -32033, http: 503, grpc: g.UNAVAILABLE, exit: 10 },
  CONFIG_INVALID: { jsonRpc: -32602, http: 400, grpc: g.INVALID_ARGUMENT, exit: 2 },
  SANDBOXFILE_INVALID: { jsonRpc: -32602, http: 400, grpc: g.INVALID_ARGUMENT, exit: 2 },
  SERVER_NOT_RUNNING: { jsonRpc: -32033, http: 503, grpc: g.UNAVAILABLE, exit: 10 },
  SERVER_ALREADY_RUNNING: { jsonRpc: -32005, http: 409, grpc: g.ALREADY_EXISTS, exit: 11 },
  PORT_IN_USE: { jsonRpc: -32602, http: 409, grpc: g.FAILED_PRECONDITION, exit: 11 },
  FILE_NOT_FOUND: { jsonRpc: -32602, http: 404, grpc: g.NOT_FOUND, exit: 4 },
};

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === "string" && (ERROR_CODES as readonly string[]).includes(value);
}
