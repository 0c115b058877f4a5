/** The public HTTP surface (SPEC.md, docs/api.md). */
export const HEALTH_PATH = "/api/v1/health";
export const RPC_PATH = "/api/v1/rpc";
export const MCP_PATH = "/mcp";
/** WebSocket: an interactive process in a sandbox (docs/api.md, "Interactive sessions"). */
export const ATTACH_PATH = "/api/v1/sandboxes/attach";

/** The JSON-RPC methods, in the order error messages list them. */
export const RPC_METHOD_NAMES = [
  "sandbox.start",
  "sandbox.stop",
  "sandbox.metrics.get",
  "sandbox.repl.run",
  "sandbox.command.run",
  "sandbox.files.write",
  "sandbox.files.read",
  "image.pull",
  "image.list",
  "image.remove",
  "image.build",
  "image.push",
] as const;

export type RpcMethodName = (typeof RPC_METHOD_NAMES)[number];

export const RPC_METHODS_HINT = RPC_METHOD_NAMES.join(", ");
