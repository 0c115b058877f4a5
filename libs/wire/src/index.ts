// The JSON-RPC/SSE wire of the control plane's public API — zod schemas of the results and
// stream events — and the one client that speaks it (used by the CLI, bench and e2e; the SDK,
// which must stay dependency-free, imports only types).
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
