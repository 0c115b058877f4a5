import { randomUUID } from "node:crypto";
import type { Server, ServerWritableStream, ServiceError } from "@grpc/grpc-js";
import { MsbError } from "@msb/errors";
import {
  ImageServiceService,
  toServiceError,
  unaryHandler,
  type HandlerContext,
  type ImageServiceServer,
  type Progress,
} from "@msb/proto";
import type { Logger } from "@msb/runtime";
import type { Operation } from "./progress.js";
import type { ImageService } from "./service.js";

/**
 * libs/proto's `serverStreamHandler`, except that a failure is emitted as the stream's
 * 'error' (which grpc-js turns into the status) instead of `call.destroy(err)`: grpc-js 1.14
 * never sends a status for a destroyed ServerWritableStream, so the caller hung forever on
 * any failed PullImage. Reported to the owner of libs/proto; delete this once it is fixed.
 */
function serverStreamHandler<Req, Res>(
  logger: Logger,
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
        const requestId = randomUUID();
        if (!(err instanceof MsbError)) logger.error({ err, method, requestId }, "internal error");
        call.emit("error", toServiceError(err, requestId) as ServiceError);
      }
    })();
  };
}

/** Streams an operation's progress, then its result, each wrapped by `wrap`. */
async function* stream<T, M>(
  op: Operation<T>,
  wrap: (event: { $case: "progress"; value: Progress } | { $case: "result"; value: T }) => M,
): AsyncGenerator<M> {
  for (;;) {
    const next = await op.next();
    if (next.done === true) {
      yield wrap({ $case: "result", value: next.value });
      return;
    }
    yield wrap({ $case: "progress", value: next.value });
  }
}

/**
 * The gRPC adapter: each RPC calls one service method; thrown MsbErrors become statuses with
 * the code in the trailers (libs/proto's handlers). No logic about images lives here.
 */
export function createImageServiceHandlers(
  service: ImageService,
  logger: Logger,
): ImageServiceServer {
  return {
    pullImage: serverStreamHandler(logger, "PullImage", (req, ctx) =>
      stream(service.pull(req.reference, req.platform, ctx.signal), (e) => ({
        event: e.$case === "progress" ? e : { $case: "image" as const, value: e.value },
      })),
    ),
    getImage: unaryHandler(logger, "GetImage", async (req) => ({
      image: await service.get(req.reference),
    })),
    listImages: unaryHandler(logger, "ListImages", async () => ({ images: await service.list() })),
    removeImage: unaryHandler(logger, "RemoveImage", async (req, ctx) => ({
      removedDigests: await service.remove(req.reference, ctx.signal),
    })),
    prepareRootfs: serverStreamHandler(logger, "PrepareRootfs", (req, ctx) =>
      stream(
        service.prepareRootfs(
          { reference: req.reference, platform: req.platform, pullIfMissing: req.pullIfMissing },
          ctx.signal,
        ),
        (e) => ({
          event: e.$case === "progress" ? e : { $case: "rootfs" as const, value: e.value },
        }),
      ),
    ),
    buildImage: serverStreamHandler(logger, "BuildImage", (req, ctx) =>
      stream(
        service.build(
          { definitionDir: req.definitionDir, tag: req.tag, noCache: req.noCache },
          ctx.signal,
        ),
        (e) => ({
          event: e.$case === "progress" ? e : { $case: "image" as const, value: e.value },
        }),
      ),
    ),
    pushImage: serverStreamHandler(logger, "PushImage", (req, ctx) =>
      stream(service.push(req.reference, req.target, ctx.signal), (e) => ({
        event: e.$case === "progress" ? e : { $case: "result" as const, value: e.value },
      })),
    ),
  };
}

/** Registers the image service on a grpc-js server. */
export function addImageService(server: Server, service: ImageService, logger: Logger): void {
  server.addService(ImageServiceService, createImageServiceHandlers(service, logger));
}
