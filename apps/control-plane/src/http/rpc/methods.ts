import type { Caller } from "../../auth/caller.js";
import {
  buildParamsSchema,
  listParamsSchema,
  pullParamsSchema,
  pushParamsSchema,
  removeParamsSchema,
} from "../../images/schemas.js";
import type { ImageService, ProgressObserver } from "../../images/service.js";
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
  /** Set when the client asked for a streamed answer (image.pull, image.build, image.push). */
  readonly progress?: ProgressObserver;
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
  "image.pull",
  "image.build",
  "image.push",
]);

export function createRpcMethods(
  service: SandboxService,
  images?: ImageService,
): ReadonlyMap<string, RpcHandler> {
  const methods = new Map<RpcMethodName, RpcHandler>([
    [
      "sandbox.start",
      async (params, { caller }) => {
        const parsed = parseParams(startParamsSchema, params);
        const r = await service.start(caller, parsed);
        const message = `Sandbox ${r.name} started successfully`;
        if (parsed.details !== true) return message;
        return {
          message,
          namespace: r.namespace,
          sandbox: r.name,
          image: r.image,
          already_running: r.alreadyRunning,
          start_kind: r.startKind,
          boot_ms: r.bootMs,
        };
      },
    ],
    [
      "sandbox.stop",
      async (params, { caller }) => {
        const r = await service.stop(caller, parseParams(stopParamsSchema, params));
        // The original's string, unchanged unless the caller asked for the (newer) `remove`.
        return `Sandbox ${r.name} stopped successfully${r.removed ? " and removed" : ""}`;
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
  if (images === undefined) return methods;
  methods.set("image.pull", (params, { caller, signal, progress }) =>
    images.pull(caller, parseParams(pullParamsSchema, params), signal, progress),
  );
  methods.set("image.list", (params, { caller, signal }) => {
    parseParams(listParamsSchema, params);
    return images.list(caller, signal);
  });
  methods.set("image.remove", (params, { caller, signal }) =>
    images.remove(caller, parseParams(removeParamsSchema, params), signal),
  );
  methods.set("image.build", (params, { caller, signal, progress }) =>
    images.build(caller, parseParams(buildParamsSchema, params), signal, progress),
  );
  methods.set("image.push", (params, { caller, signal, progress }) =>
    images.push(caller, parseParams(pushParamsSchema, params), signal, progress),
  );
  return methods;
}
