import { mkdir, rm, stat } from "node:fs/promises";
import { dirname } from "node:path";
import { Server, ServerCredentials } from "@grpc/grpc-js";
import { MsbError } from "@msb/errors";
import type { Logger } from "@msb/runtime";
import { addImageService } from "./grpc.js";
import type { ImageService } from "./service.js";

export interface RunningServer {
  readonly address: string;
  /** Stops accepting calls, lets running ones finish until `signal` aborts, then forces. */
  stop(signal: AbortSignal): Promise<void>;
}

/**
 * Binds a grpc-js server with the image service on `address` (`unix:/path` or host:port).
 * A socket file left by a dead predecessor is removed first; a live one is not stolen.
 */
export async function startGrpcServer(
  address: string,
  service: ImageService,
  logger: Logger,
): Promise<RunningServer> {
  if (address.startsWith("unix:")) {
    const path = address.slice("unix:".length);
    await mkdir(dirname(path), { recursive: true });
    const st = await stat(path).catch(() => undefined);
    if (st?.isSocket() === true) {
      const live = await new Promise<boolean>((resolve) => {
        void import("node:net").then(({ connect }) => {
          const s = connect(path);
          s.once("connect", () => {
            s.destroy();
            resolve(true);
          });
          s.once("error", () => resolve(false));
        });
      });
      if (live) {
        throw new MsbError(
          "PORT_IN_USE",
          `Another process serves ${address}. Stop it, or set MSB_IMAGE_SERVICE_ADDR to another socket.`,
          { details: { address } },
        );
      }
      await rm(path, { force: true });
      logger.info({ path }, "removed stale socket");
    }
  }
  const server = new Server({ "grpc.max_receive_message_length": 16 * 1024 * 1024 });
  addImageService(server, service, logger);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(address, ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(err) : resolve(p),
    );
  }).catch((err: unknown) => {
    throw new MsbError(
      "PORT_IN_USE",
      `Cannot listen on ${address} (${(err as Error).message}). Free it or set MSB_IMAGE_SERVICE_ADDR.`,
      { details: { address }, cause: err },
    );
  });
  const bound = address.startsWith("unix:") ? address : address.replace(/:0$/, `:${port}`);
  logger.info({ address: bound }, "image service listening");
  return {
    address: bound,
    async stop(signal) {
      await new Promise<void>((resolve) => {
        const force = (): void => {
          server.forceShutdown();
          resolve();
        };
        signal.addEventListener("abort", force, { once: true });
        server.tryShutdown(() => {
          signal.removeEventListener("abort", force);
          resolve();
        });
      });
    },
  };
}
