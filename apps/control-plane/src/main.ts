import { readFileSync } from "node:fs";
import { join } from "node:path";
import { loadOrCreateServerSecret } from "@msb/keys";
import { createLogger, runMain } from "@msb/runtime";
import { createApp } from "./app.js";
import { createAuthenticator } from "./auth/authenticate.js";
import { isLoopbackHost, loadConfig } from "./config.js";
import { createGrpcImageBackend } from "./grpc/image-backend.js";
import { createGrpcVmmBackend } from "./grpc/vmm-backend.js";
import { createHealthProbe } from "./health.js";
import { createGrpcImageStore } from "./images/grpc-image-store.js";
import { createImageService } from "./images/service.js";
import { createSandboxPolicy } from "./sandboxes/policy.js";
import { reconcileWhenReady } from "./sandboxes/reconciler.js";
import { createSandboxService } from "./sandboxes/service.js";
import { openSandboxStore } from "./sandboxes/store.js";

/** Deadline of image.list / image.remove at the image service (a local store: no network). */
const IMAGE_UNARY_MS = 30_000;

const logger = createLogger({ name: "control-plane" });
const { version } = JSON.parse(
  readFileSync(new URL("../package.json", import.meta.url), "utf8"),
) as { version: string };

runMain(
  async (lifecycle) => {
    const config = loadConfig(process.env);
    const loopback = isLoopbackHost(config.host);
    if (config.dev && !loopback) {
      logger.warn(
        { host: config.host },
        "!!! DEV MODE ON A NON-LOOPBACK ADDRESS: authentication is OFF and anyone who can reach this host can run code and mount your home directory. Use --dev only on 127.0.0.1. !!!",
      );
    }

    const secret = config.serverKey ?? (await loadOrCreateServerSecret(config.msbHome));
    const store = openSandboxStore(join(config.msbHome, "msb.db"));
    lifecycle.onShutdown("database", () => store.close());
    const image = createGrpcImageBackend({
      address: config.imageServiceAddr,
      prepareRootfsMs: config.timeouts.prepareRootfsMs,
      probeMs: config.timeouts.probeMs,
    });
    lifecycle.onShutdown("image-service client", () => image.close());
    const imageStore = createGrpcImageStore({
      address: config.imageServiceAddr,
      longOperationMs: config.timeouts.prepareRootfsMs,
      unaryMs: IMAGE_UNARY_MS,
    });
    lifecycle.onShutdown("image-service store client", () => imageStore.close());
    const vmm = createGrpcVmmBackend({
      address: config.vmmAgentAddr,
      createVmMs: config.timeouts.createVmMs,
      stopVmMs: config.timeouts.stopVmMs,
      probeMs: config.timeouts.probeMs,
    });
    lifecycle.onShutdown("vmm-agent client", () => vmm.close());

    const sandboxes = createSandboxService(
      { store, image, vmm, policy: createSandboxPolicy(config.policy), logger },
      {
        outputLimitBytes: config.limits.outputLimitBytes,
        runDefaultMs: config.timeouts.runDefaultMs,
        runMaxMs: config.timeouts.runMaxMs,
        signal: lifecycle.signal,
      },
    );
    const reconciled = reconcileWhenReady(sandboxes, logger, {
      signal: lifecycle.signal,
      intervalMs: config.timeouts.reconcileIntervalMs,
    });
    lifecycle.onShutdown("reconciler", () => reconciled);

    const app = createApp(
      {
        sandboxes,
        images: createImageService({ store: imageStore }),
        auth: createAuthenticator({ dev: config.dev, secret }),
        health: createHealthProbe({ image, vmm }, { version }),
        logger,
      },
      {
        version,
        bodyLimitBytes: config.limits.bodyLimitBytes,
        maxBatchSize: config.limits.maxBatchSize,
        mcpMaxSessions: config.limits.mcpMaxSessions,
        mcpMaxSessionsPerKey: config.limits.mcpMaxSessionsPerKey,
        allowedOrigins: config.allowedOrigins,
        allowedHosts: config.allowedHosts,
        http: config.http,
        healthTimeoutMs: config.timeouts.probeMs,
        loopbackHostsOnly: loopback,
      },
    );
    lifecycle.onShutdown("http", () => app.close());
    const url = await app.listen({ host: config.host, port: config.port });
    logger.info(
      {
        url,
        dev: config.dev,
        msbHome: config.msbHome,
        imageService: config.imageServiceAddr,
        vmmAgent: config.vmmAgentAddr,
        volumeRoots: config.policy.volumeRoots,
      },
      "control plane listening",
    );
  },
  { logger },
);
