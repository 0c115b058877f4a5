import { createLogger, runMain } from "@msb/runtime";
import { loadConfig } from "./config.js";
import { startGrpcServer } from "./server.js";
import { createImageService } from "./service.js";

// Composition root: configuration, the service, the gRPC server, the shutdown hook.
const logger = createLogger({ name: "image-service" });

runMain(
  async (lifecycle) => {
    const config = loadConfig(process.env);
    const service = await createImageService(config);
    const server = await startGrpcServer(config.address, service, logger);
    lifecycle.onShutdown("grpc server", (signal) => server.stop(signal));
  },
  { logger },
);
