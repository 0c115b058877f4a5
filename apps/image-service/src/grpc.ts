import type { Server } from "@grpc/grpc-js";
import {
  ImageServiceService,
  serverStreamHandler,
  unaryHandler,
  type ImageServiceServer,
  type Progress,
} from "@msb/proto";
import type { Logger } from "@msb/runtime";
import type { Operation } from "./progress.js";
import type { ImageService } from "./service.js";

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
    checkPull: unaryHandler(logger, "CheckPull", (req) => service.checkPull(req.reference)),
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
