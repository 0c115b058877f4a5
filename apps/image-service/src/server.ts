import { Server } from "@grpc/grpc-js";
import { bindGrpcServer } from "@msb/proto";
import type { Logger } from "@msb/runtime";
import { addImageService } from "./grpc.js";
import type { ImageService } from "./service.js";

export interface RunningServer {
  readonly address: string;
  /** Stops accepting calls, lets running ones finish until `signal` aborts, then forces. */
  stop(signal: AbortSignal): Promise<void>;
}

/**
 * Binds a grpc-js server with the image service on `address` (`unix:/path` or host:port)
 * through libs/proto's bindGrpcServer: a socket file left by a dead predecessor is removed
 * first; a live one, or a taken port, is PORT_IN_USE.
 */
export async function startGrpcServer(
  address: string,
  service: ImageService,
  logger: Logger,
): Promise<RunningServer> {
  const server = new Server({ "grpc.max_receive_message_length": 16 * 1024 * 1024 });
  addImageService(server, service, logger);
  const bound = await bindGrpcServer(server, address, {
    addressSetting: "MSB_IMAGE_SERVICE_ADDR",
    onStaleSocket: (path) => logger.info({ path }, "removed stale socket"),
  });
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
