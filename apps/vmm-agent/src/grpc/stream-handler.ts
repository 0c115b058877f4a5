import { MsbError } from "@msb/errors";
import { toServiceError, type HandlerContext } from "@msb/proto";
import type { ServerWritableStream } from "@grpc/grpc-js";

interface ErrorLogger {
  error(obj: object, msg: string): void;
}

/**
 * Adapts an async generator to a grpc-js server-streaming handler, like `serverStreamHandler`
 * of @msb/proto, with one difference: a failure is reported with `emit("error")`, which makes
 * grpc-js send the status (and the msb error code) to the caller. `@msb/proto`'s version calls
 * `destroy(err)`, after which grpc-js never sends a status and the caller waits for its
 * deadline (reported to the owner of libs/proto; switch back once it is fixed there).
 */
export function streamHandler<Req, Res>(
  logger: ErrorLogger,
  method: string,
  fn: (request: Req, ctx: HandlerContext) => AsyncIterable<Res>,
): (call: ServerWritableStream<Req, Res>) => void {
  return (call) => {
    const controller = new AbortController();
    call.on("cancelled", () =>
      controller.abort(new MsbError("CANCELLED", "The caller went away.")),
    );
    void (async () => {
      try {
        for await (const message of fn(call.request, {
          signal: controller.signal,
          metadata: call.metadata,
        })) {
          if (controller.signal.aborted) return;
          if (!call.write(message)) {
            await new Promise<void>((resolve) => {
              call.once("drain", resolve);
              controller.signal.addEventListener("abort", () => resolve(), { once: true });
            });
          }
        }
        call.end();
      } catch (err) {
        if (controller.signal.aborted) return;
        const requestId = crypto.randomUUID();
        if (!(err instanceof MsbError)) logger.error({ err, method, requestId }, "internal error");
        call.emit("error", toServiceError(err, requestId));
      }
    })();
  };
}
