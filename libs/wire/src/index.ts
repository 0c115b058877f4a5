// The JSON-RPC/SSE wire of the control plane's public API, and the one client that speaks it
// (used by the CLI, bench and e2e; the SDK imports only types).
export {
  createControlPlaneClient,
  DEFAULT_SERVER_URL,
  dialUrl,
  type ControlPlaneClient,
  type ControlPlaneClientOptions,
} from "./client.js";
export {
  jsonRpcResult,
  readEventStream,
  streamRpc,
  type ServerTarget,
  type StreamedOutput,
} from "./stream.js";
