import { MsbError, type ErrorCode } from "@msb/errors";
import { z } from "zod";

// Wire schemas of the JSON payloads a guest sends (docs/agent-protocol.md). Guest JSON is
// validated before use; unknown fields are dropped, missing or mistyped ones are protocol
// errors. TypeScript-side names are camelCase; the wire is snake_case.

const count = z.number().int().nonnegative();

export const helloSchema = z
  .object({
    protocol: z.number().int(),
    agent: z.string().max(200),
    kernel: z.string().max(200).optional(),
    max_frame_bytes: count,
    window_bytes: count,
    ready: z.boolean(),
    boot_ms: z
      .object({ kernel: count, root: count, agent: count, total: count })
      .partial()
      .default({}),
    boot_errors: z.array(z.string().max(2000)).max(64).default([]),
    boot_warnings: z.array(z.string().max(2000)).max(64).default([]),
    streams: z.array(count).max(4096).default([]),
  })
  .transform((h) => ({
    protocol: h.protocol,
    agentVersion: h.agent,
    kernel: h.kernel,
    maxFrameBytes: h.max_frame_bytes,
    windowBytes: h.window_bytes,
    ready: h.ready,
    bootMs: h.boot_ms,
    bootErrors: h.boot_errors,
    bootWarnings: h.boot_warnings,
    streams: h.streams,
  }));
/** What the agent reports when it starts serving (and on every reconnect). */
export type Hello = z.output<typeof helloSchema>;

export const agentErrorSchema = z.object({
  error: z.object({ code: z.string().max(100), message: z.string().max(4000) }),
});
export type AgentErrorPayload = z.output<typeof agentErrorSchema>["error"];

const AGENT_CODE_MAP: Readonly<Record<string, ErrorCode>> = {
  bad_request: "INVALID_PARAMS",
  unknown_op: "INVALID_PARAMS",
  not_found: "FILE_NOT_FOUND",
  not_a_directory: "INVALID_PARAMS",
  is_a_directory: "INVALID_PARAMS",
  permission_denied: "INVALID_PARAMS",
  exists: "INVALID_PARAMS",
  no_space: "CAPACITY_EXHAUSTED",
  too_many_streams: "CAPACITY_EXHAUSTED",
  no_such_stream: "INVALID_PARAMS",
  stream_busy: "AGENT_PROTOCOL_ERROR",
  window_exceeded: "AGENT_PROTOCOL_ERROR",
  bad_frame: "AGENT_PROTOCOL_ERROR",
  bad_frame_length: "AGENT_PROTOCOL_ERROR",
  io_error: "INTERNAL",
  spawn_failed: "INTERNAL",
  internal: "INTERNAL",
};

/** Turns an agent `{error:{code,message}}` into an MsbError; the agent's code stays in details. */
export function agentError(op: string, code: string, message: string): MsbError {
  // A code outside docs/agent-protocol.md comes from a broken or hostile guest, not from a
  // fault of msb: the caller sees AGENT_PROTOCOL_ERROR.
  return new MsbError(AGENT_CODE_MAP[code] ?? "AGENT_PROTOCOL_ERROR", `${op}: ${message}`, {
    details: { agentCode: code, op },
  });
}

export const exitSchema = z
  .object({
    exit_code: z.number().int(),
    signal: z.number().int().nullable(),
    timed_out: z.boolean(),
    duration_ms: count,
    stdout_bytes: count.optional(),
    stderr_bytes: count.optional(),
    oom_killed: z.boolean().optional(),
  })
  .transform((e) => ({
    exitCode: e.exit_code,
    signal: e.signal,
    timedOut: e.timed_out,
    durationMs: e.duration_ms,
    stdoutBytes: e.stdout_bytes ?? 0,
    stderrBytes: e.stderr_bytes ?? 0,
    oomKilled: e.oom_killed ?? false,
  }));
/** How a process ended. `exitCode` is 128 + signal when it was killed by one. */
export type ExitStatus = z.output<typeof exitSchema>;

export const pidSchema = z.object({ pid: z.number().int().positive() });
export const pongSchema = z.object({ pong: z.literal(true), uptime_ms: count });
export const okSchema = z.object({ ok: z.literal(true) });
export const configureResultSchema = z.object({ errors: z.array(z.string().max(2000)).max(256) });
export const bytesSchema = z.object({ bytes: count });
export const readFileResultSchema = z.object({ bytes: count, size: count, truncated: z.boolean() });

export const dirEntrySchema = z
  .object({
    name: z.string().max(4096),
    type: z.enum(["file", "dir", "symlink", "other"]),
    size: z.number().int(),
    mode: count,
    mtime_ms: z.number().int(),
  })
  .transform((e) => ({
    name: e.name,
    type: e.type,
    size: e.size,
    mode: e.mode,
    mtimeMs: e.mtime_ms,
  }));
export type DirEntry = z.output<typeof dirEntrySchema>;
export const listDirSchema = z.object({ entries: z.array(dirEntrySchema), truncated: z.boolean() });

export const metricsSchema = z
  .object({
    cpu_pct: z.number().min(0).max(100_000),
    mem_total_bytes: count,
    mem_used_bytes: count,
    mem_limit_bytes: count.optional(),
    disk_total_bytes: count.optional(),
    disk_used_bytes: count.optional(),
    procs: count,
    streams: count.optional(),
    uptime_ms: count.optional(),
  })
  .transform((m) => ({
    cpuPct: m.cpu_pct,
    memTotalBytes: m.mem_total_bytes,
    memUsedBytes: m.mem_used_bytes,
    memLimitBytes: m.mem_limit_bytes,
    diskTotalBytes: m.disk_total_bytes ?? 0,
    diskUsedBytes: m.disk_used_bytes ?? 0,
    procs: m.procs,
    uptimeMs: m.uptime_ms,
  }));
/** Guest resource use. `cpuPct` is averaged since the previous `metrics` call. */
export type Metrics = z.output<typeof metricsSchema>;

/** Lines a REPL driver writes on its control channel. */
export const replReadySchema = z.object({
  ready: z.literal(true),
  language: z.string().max(40),
  version: z.string().max(100).optional(),
});
export const replErrorSchema = z.object({
  type: z.string().max(200),
  message: z.string().max(100_000),
  traceback: z.string().max(1_000_000).default(""),
});
export type ReplError = z.output<typeof replErrorSchema>;
export const replResultSchema = z.object({
  id: z.union([z.number(), z.string(), z.null()]),
  status: z.enum(["success", "error"]),
  error: replErrorSchema.optional(),
});
