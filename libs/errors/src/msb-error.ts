import { ERROR_CODE_INFO, isErrorCode, type ErrorCode } from "./codes.js";

/** Structured, JSON-safe details attached to an error (field names, limits, ids). */
export type ErrorDetails = Readonly<Record<string, unknown>>;

export interface MsbErrorOptions {
  readonly details?: ErrorDetails;
  readonly cause?: unknown;
}

/**
 * The one error type of msb. `message` is written for the person who reads it: what went
 * wrong and what to do next. `code` is stable and machine-readable.
 */
export class MsbError extends Error {
  override readonly name = "MsbError";
  readonly code: ErrorCode;
  readonly details: ErrorDetails;

  constructor(code: ErrorCode, message: string, options: MsbErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = options.details ?? {};
  }

  /** True for codes that describe the caller's input rather than a server fault. */
  get isClientError(): boolean {
    const http = ERROR_CODE_INFO[this.code].http;
    return http >= 400 && http < 500;
  }

  toJSON(): { code: ErrorCode; message: string; details: ErrorDetails } {
    return { code: this.code, message: this.message, details: this.details };
  }
}

export function isMsbError(value: unknown): value is MsbError {
  return value instanceof MsbError;
}

/**
 * Turns anything thrown into an MsbError. Known MsbErrors pass through; everything else
 * becomes an opaque INTERNAL error that names the request id, so the caller can quote it
 * and the operator can find the cause in the log. The original is kept as `cause`.
 */
export function toMsbError(value: unknown, requestId?: string): MsbError {
  // An INTERNAL error from further in (e.g. a service behind gRPC) gets this request's id too:
  // its message tells the caller to quote one.
  const passOn =
    value instanceof MsbError &&
    !(value.code === "INTERNAL" && requestId !== undefined && !("requestId" in value.details));
  if (passOn) return value;
  const ref = requestId === undefined ? "" : ` (request id ${requestId})`;
  return new MsbError(
    "INTERNAL",
    `msb hit an internal fault${ref}. It has been logged with its cause; retry, and if it persists report it with the request id.`,
    {
      cause: value,
      details: {
        ...(value instanceof MsbError ? value.details : {}),
        ...(requestId === undefined ? {} : { requestId }),
      },
    },
  );
}

/** Rebuilds an MsbError from its wire form (gRPC metadata, JSON-RPC `data`, SDK answers). */
export function msbErrorFromWire(code: unknown, message: string, details?: unknown): MsbError {
  const safeDetails =
    details !== null && typeof details === "object" && !Array.isArray(details)
      ? (details as ErrorDetails)
      : {};
  return new MsbError(isErrorCode(code) ? code : "INTERNAL", message, { details: safeDetails });
}
