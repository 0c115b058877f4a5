/**
 * Typed errors. Every server error carries a stable string code in `error.data.code`
 * (docs/errors.md); the SDK turns it into one of these classes, all `MicrosandboxError`s, so
 * `err instanceof SandboxNotFoundError` and `err.code === "SANDBOX_STOPPED"` both work.
 */

/** `error.data` as the server sent it (`code`, `issues`, `requestId`, …). */
export type ErrorData = Readonly<Record<string, unknown>>;

export interface MicrosandboxErrorOptions {
  /** The JSON-RPC numeric code; absent for errors raised in the client. */
  readonly rpcCode?: number;
  readonly data?: ErrorData;
  readonly cause?: unknown;
}

/** Base class of every error the SDK throws. */
export class MicrosandboxError extends Error {
  /** Stable string code: `SANDBOX_NOT_FOUND`, `AUTH_REQUIRED`, … */
  readonly code: string;
  /** JSON-RPC numeric code, `undefined` for client-side errors (connection refused, …). */
  readonly rpcCode: number | undefined;
  readonly data: ErrorData;
  /** The server's request id, when it sent one: quote it when reporting a fault. */
  readonly requestId: string | undefined;

  constructor(message: string, code: string, options: MicrosandboxErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.code = code;
    this.rpcCode = options.rpcCode;
    this.data = options.data ?? {};
    const rid = this.data["requestId"] ?? this.data["request_id"];
    this.requestId = typeof rid === "string" || typeof rid === "number" ? String(rid) : undefined;
  }
}

/** The msb server cannot be reached: refused, unresolvable, or the connection dropped. */
export class ServerNotRunningError extends MicrosandboxError {}
/** Missing, invalid, expired or foreign API key (JSON-RPC -32002). */
export class AuthenticationError extends MicrosandboxError {}
/** The sandbox does not exist or is not running (JSON-RPC -32004). */
export class SandboxNotFoundError extends MicrosandboxError {}
/** A sandbox of that name runs with another configuration (JSON-RPC -32005). */
export class SandboxExistsError extends MicrosandboxError {}
/** The sandbox is starting or stopping; retry once that finishes. */
export class SandboxBusyError extends MicrosandboxError {}
/** A parameter is missing or wrong, or a host resource was denied (JSON-RPC -32602). */
export class InvalidParamsError extends MicrosandboxError {}
/** The server does not implement the method (JSON-RPC -32601). */
export class MethodNotFoundError extends MicrosandboxError {}
/** An operation exceeded its deadline, on the server or in the client. */
export class TimeoutError extends MicrosandboxError {}
/** The image could not be found, pulled, unpacked or built. */
export class ImageError extends MicrosandboxError {}
/** The VM or its guest agent failed to come up. */
export class SandboxStartError extends MicrosandboxError {}
/** The host has no room for another sandbox, or the namespace is at its quota (QUOTA_EXCEEDED). */
export class CapacityError extends MicrosandboxError {}
/** An msb service behind the server is down or restarting. */
export class ServiceUnavailableError extends MicrosandboxError {}
/** A fault inside msb; `requestId` finds the cause in `msb server log`. */
export class InternalError extends MicrosandboxError {}
/** The server answered something that is not JSON-RPC (wrong URL, a proxy page). */
export class ProtocolError extends MicrosandboxError {}
/** The server does not implement `sandbox.files.*` (docs/streaming.md). */
export class FilesUnsupportedError extends MicrosandboxError {}

type ErrorClass = new (
  message: string,
  code: string,
  options?: MicrosandboxErrorOptions,
) => MicrosandboxError;

const BY_CODE: Readonly<Record<string, ErrorClass>> = {
  AUTH_REQUIRED: AuthenticationError,
  AUTH_INVALID: AuthenticationError,
  AUTH_FORBIDDEN: AuthenticationError,
  SANDBOX_NOT_FOUND: SandboxNotFoundError,
  SANDBOX_STOPPED: SandboxNotFoundError,
  VM_DIED: SandboxNotFoundError,
  AGENT_DISCONNECTED: SandboxNotFoundError,
  SANDBOX_EXISTS: SandboxExistsError,
  SANDBOX_BUSY: SandboxBusyError,
  INVALID_PARAMS: InvalidParamsError,
  POLICY_DENIED: InvalidParamsError,
  IMAGE_REFERENCE_INVALID: InvalidParamsError,
  FILE_NOT_FOUND: InvalidParamsError,
  METHOD_NOT_FOUND: MethodNotFoundError,
  TIMEOUT: TimeoutError,
  VM_BOOT_TIMEOUT: TimeoutError,
  AGENT_TIMEOUT: TimeoutError,
  IMAGE_NOT_FOUND: ImageError,
  IMAGE_PULL_FAILED: ImageError,
  IMAGE_DIGEST_MISMATCH: ImageError,
  IMAGE_LAYER_INVALID: ImageError,
  IMAGE_BUILD_FAILED: ImageError,
  REGISTRY_UNREACHABLE: ImageError,
  REGISTRY_AUTH_FAILED: ImageError,
  ROOTFS_BUILD_FAILED: ImageError,
  KERNEL_MISSING: SandboxStartError,
  VM_BOOT_FAILED: SandboxStartError,
  AGENT_PROTOCOL_ERROR: SandboxStartError,
  CAPACITY_EXHAUSTED: CapacityError,
  QUOTA_EXCEEDED: CapacityError,
  SERVICE_UNAVAILABLE: ServiceUnavailableError,
  SERVER_NOT_RUNNING: ServerNotRunningError,
  INTERNAL: InternalError,
};

/** For servers that send only the numeric code (the original microsandbox server did). */
const CODE_BY_RPC: Readonly<Record<number, string>> = {
  [-32700]: "PARSE_ERROR",
  [-32600]: "INVALID_REQUEST",
  [-32601]: "METHOD_NOT_FOUND",
  [-32602]: "INVALID_PARAMS",
  [-32603]: "INTERNAL",
  [-32002]: "AUTH_REQUIRED",
  [-32004]: "SANDBOX_NOT_FOUND",
  [-32005]: "SANDBOX_EXISTS",
  [-32006]: "SANDBOX_BUSY",
  [-32010]: "IMAGE_NOT_FOUND",
  [-32011]: "IMAGE_PULL_FAILED",
  [-32021]: "VM_BOOT_FAILED",
  [-32022]: "VM_BOOT_TIMEOUT",
  [-32024]: "AGENT_TIMEOUT",
  [-32030]: "TIMEOUT",
  [-32032]: "CAPACITY_EXHAUSTED",
  [-32034]: "QUOTA_EXCEEDED",
  [-32033]: "SERVICE_UNAVAILABLE",
};

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Builds the typed error for a JSON-RPC `error` object. */
export function errorFromRpc(error: unknown): MicrosandboxError {
  if (!isRecord(error)) {
    return new ProtocolError(
      `the server sent a malformed JSON-RPC error: ${JSON.stringify(error)}`,
      "PROTOCOL_ERROR",
    );
  }
  const rpcCode = typeof error["code"] === "number" ? error["code"] : undefined;
  const rawMessage = error["message"];
  const message =
    typeof rawMessage === "string" && rawMessage !== ""
      ? rawMessage
      : "the server reported an error without a message";
  const data = isRecord(error["data"]) ? error["data"] : {};
  const fallback = rpcCode === undefined ? "INTERNAL" : (CODE_BY_RPC[rpcCode] ?? "INTERNAL");
  const code = typeof data["code"] === "string" ? data["code"] : fallback;
  const Class = BY_CODE[code] ?? BY_CODE[rpcCode === undefined ? "" : (CODE_BY_RPC[rpcCode] ?? "")];
  return new (Class ?? MicrosandboxError)(message, code, {
    data,
    ...(rpcCode === undefined ? {} : { rpcCode }),
  });
}
