import { destination, pino, stdTimeFunctions, type Logger, type LoggerOptions } from "pino";

export type { Logger } from "pino";

/**
 * Paths redacted from every log line: API keys and secrets must never reach a log file
 * (SPEC: secrets never appear in logs, errors or the guest).
 */
export const REDACTED_PATHS = [
  "apiKey",
  "key",
  "secret",
  "password",
  "token",
  "authorization",
  "*.apiKey",
  "*.secret",
  "*.password",
  "*.token",
  "*.authorization",
  "req.headers.authorization",
  'req.headers["proxy-authorization"]',
];

export interface CreateLoggerOptions {
  /** Service name, written as `svc` on every line. */
  readonly name: string;
  /** pino level; defaults to `MSB_LOG_LEVEL` or `info`. */
  readonly level?: string;
  /** Where lines go; defaults to stdout (fd 1). */
  readonly destination?: number | string;
}

/** JSON lines on stdout (or a file), one logger per process, secrets redacted. */
export function createLogger(options: CreateLoggerOptions): Logger {
  const config: LoggerOptions = {
    level: options.level ?? process.env["MSB_LOG_LEVEL"] ?? "info",
    base: { svc: options.name, pid: process.pid },
    redact: { paths: REDACTED_PATHS, censor: "[redacted]" },
    timestamp: stdTimeFunctions.isoTime,
  };
  return pino(config, destination({ dest: options.destination ?? 1, sync: false }));
}
