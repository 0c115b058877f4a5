// The JSON-RPC/SSE wire of the control plane's public API — zod schemas of the results and
// stream events — and the one client that speaks it (used by the CLI, bench and e2e; the SDK,
// which must stay dependency-free, keeps its own client and is held to these types by a test).
// The control plane's zod param schemas (apps/control-plane/src/sandboxes/schemas.ts and
// images/schemas.ts) are meant to move here unchanged, under src/schemas/: their imports
// (@msb/errors, @msb/keys, zod) are already this library's dependencies.
export {
  createControlPlaneClient,
  DEFAULT_SERVER_URL,
  dialUrl,
  type ControlPlaneClient,
  type ControlPlaneClientOptions,
} from "./client.js";
export { parseAnswer } from "./parse.js";
export {
  outputEventSchema,
  progressEventSchema,
  rpcResponseSchema,
  SSE_EVENTS,
  type OutputEvent,
  type ProgressEvent,
  type RpcResponse,
  type SseEventName,
} from "./schemas/events.js";
export {
  commandResultSchema,
  healthSchema,
  imageListSchema,
  imageSummarySchema,
  metricsResultSchema,
  outputChunkSchema,
  pushResultSchema,
  replResultSchema,
  sandboxMetricsSchema,
  startCountersSchema,
  startDetailsSchema,
  templateHealthSchema,
  vmmHealthSchema,
  type CommandResult,
  type Health,
  type ImageSummary,
  type OutputChunk,
  type ReplResult,
  type SandboxMetrics,
  type StartCounters,
  type StartDetails,
  type TemplateHealth,
  type VmmHealth,
} from "./schemas/results.js";
export {
  jsonRpcResult,
  readEventStream,
  streamRpc,
  type ServerTarget,
  type StreamedOutput,
  type StreamRpcOptions,
} from "./stream.js";
