import type { Caller } from "../../auth/caller.js";
import {
  filesReadParamsSchema,
  filesWriteParamsSchema,
  metricsParamsSchema,
  parseParams,
  runCodeParamsSchema,
  runCommandParamsSchema,
  startParamsSchema,
  stopParamsSchema,
} from "../../sandboxes/schemas.js";
import type { RunObserver, SandboxService } from "../../sandboxes/service.js";
import type { RpcMethodName } from "../routes.js";

export interface RpcContext {
  readonly caller: Caller;
  /** Aborts when the HTTP client goes away. */
  readonly signal: AbortSignal;
  /** Set when the client asked for a streamed answer (repl.run and command.run only). */
  readonly observer?: RunObserver;
}

export type RpcHandler = (params: unknown, ctx: RpcContext) => Promise<unknown>;

/**
 * The JSON-RPC methods of SPEC.md: each parses its params (zod), calls one service method,
 * and shapes the result as the original's SDKs read it (`sandbox.start` and `sandbox.stop`
 * answer with a sentence, the others with objects).
 */
/** Methods that may answer as a server-sent-event stream (docs/streaming.md). */
export const STREAMABLE_METHODS: ReadonlySet<string> = new Set([
  "sandbox.repl.run",
  "sandbox.command.run",
]);

export function createRpcMethods(service: SandboxService): ReadonlyMap<string, RpcHandler> {
  return new Map<RpcMethodName, RpcHandler>([
    [
      "sandbox.start",
      async (params, { caller }) => {
        const r = await service.start(caller, parseParams(startParamsSchema, params));
        return `Sandbox ${r.name} started successfully`;
      },
    ],
    [
      "sandbox.stop",
      async (params, { caller }) => {
        const r = await service.stop(caller, parseParams(stopParamsSchema, params));
        return `Sandbox ${r.name} stopped successfully`;
      },
    ],
    [
      "sandbox.metrics.get",
      (params, { caller, signal }) =>
        service.metrics(caller, parseParams(metricsParamsSchema, params), signal),
    ],
    [
      "sandbox.repl.run",
      (params, { caller, signal, observer }) =>
        service.runCode(caller, parseParams(runCodeParamsSchema, params), signal, observer),
    ],
    [
      "sandbox.command.run",
      (params, { caller, signal, observer }) =>
        service.runCommand(caller, parseParams(runCommandParamsSchema, params), signal, observer),
    ],
    [
      "sandbox.files.write",
      (params, { caller, signal }) =>
        service.writeFile(caller, parseParams(filesWriteParamsSchema, params), signal),
    ],
    [
      "sandbox.files.read",
      (params, { caller, signal }) =>
        service.readFile(caller, parseParams(filesReadParamsSchema, params), signal),
    ],
  ]);
}
