export {
  DEFAULT_WINDOW_BYTES,
  FRAME_HEADER_BYTES,
  FrameDecoder,
  FrameKind,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  encodeFrame,
  type Frame,
  type FrameDecoderOptions,
} from "./frame.js";
export type { DirEntry, ExitStatus, Hello, Metrics, ReplError } from "./messages.js";
export { AgentClient, createAgentClient } from "./client.js";
export type {
  AgentClientOptions,
  CallOptions,
  ConfigureParams,
  ExecOptions,
  ExecParams,
  OutputChunk,
  ProcessHandle,
  RunResult,
} from "./types.js";
export {
  REPL_DRIVER_ARGV,
  REPL_DRIVER_DIR,
  ReplSession,
  createReplSession,
  type ReplLanguage,
  type ReplOutput,
  type ReplResult,
  type ReplRunOptions,
  type ReplSessionOptions,
} from "./repl-session.js";
