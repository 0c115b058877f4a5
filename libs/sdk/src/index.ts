/**
 * TypeScript/JavaScript SDK for msb: run untrusted code in microVM sandboxes.
 * No dependencies: Node's built-in `fetch`. ESM (`import`) and CommonJS (`require`).
 *
 *   import { NodeSandbox } from "microsandbox";
 *   const sb = await NodeSandbox.create({ name: "my-first-sandbox" });
 *   try {
 *     const exec = await sb.run("console.log('Hello')");
 *     console.log(await exec.output());
 *   } finally {
 *     await sb.stop();
 *   }
 */
export {
  BaseSandbox,
  DEFAULT_SERVER_URL,
  DEFAULT_START_WAIT_SECONDS,
  NodeSandbox,
  PythonSandbox,
} from "./sandbox.js";
export type { RunOptions, SandboxOptions, StartOptions } from "./sandbox.js";
export type { OutputHandler, OutputHandlers } from "./channel.js";
export { Command } from "./command.js";
export type { CommandRunOptions } from "./command.js";
export { CommandExecution, Execution, joinStream, replayChunks } from "./execution.js";
export type { OutputItem } from "./execution.js";
export { Metrics } from "./metrics.js";
export type { SandboxMetrics } from "./metrics.js";
export { Files } from "./files.js";
export type { FileEntry } from "./files.js";
export { RPC_PATH, RpcClient } from "./rpc.js";
export type { CallOptions, OutputCallback, RpcClientOptions } from "./rpc.js";
export {
  AuthenticationError,
  CapacityError,
  FilesUnsupportedError,
  ImageError,
  InternalError,
  InvalidParamsError,
  MethodNotFoundError,
  MicrosandboxError,
  ProtocolError,
  SandboxBusyError,
  SandboxExistsError,
  SandboxNotFoundError,
  SandboxStartError,
  ServerNotRunningError,
  ServiceUnavailableError,
  TimeoutError,
  errorFromRpc,
} from "./errors.js";
export type { ErrorData, MicrosandboxErrorOptions } from "./errors.js";
export { SDK_VERSION } from "./version.js";
