import { MsbError } from "@msb/errors";
import { ImageServiceClient, createGrpcChannelCredentials, readServerStream } from "@msb/proto";
import type { ImageBackend, PreparedRootfs } from "../sandboxes/backends.js";
import { waitForReady } from "./ready.js";

const SERVICE = "image service";

export interface GrpcImageBackendOptions {
  /** `unix:/path` or `host:port`. */
  readonly address: string;
  /** Deadline of PrepareRootfs, pull included. */
  readonly prepareRootfsMs: number;
  /** Deadline of the health probe. */
  readonly probeMs: number;
}

export interface GrpcImageBackend extends ImageBackend {
  close(): void;
}

/** ImageBackend over the image-service's gRPC API (proto/msb/image/v1). */
export function createGrpcImageBackend(options: GrpcImageBackendOptions): GrpcImageBackend {
  const client = new ImageServiceClient(options.address, createGrpcChannelCredentials());
  return {
    async prepareRootfs(reference, signal, prepareOptions) {
      const stream = client.prepareRootfs(
        { reference, platform: "", pullIfMissing: prepareOptions?.pullIfMissing ?? true },
        { deadline: new Date(Date.now() + options.prepareRootfsMs) },
      );
      let rootfs: PreparedRootfs | undefined;
      for await (const message of readServerStream(SERVICE, stream, signal)) {
        if (message.event?.$case !== "rootfs") continue;
        const r = message.event.value;
        rootfs = {
          path: r.path,
          imageReference: r.image?.reference ?? reference,
          manifestDigest: r.image?.manifestDigest ?? "",
          env: r.image?.config?.env ?? [],
          workdir: r.image?.config?.workingDir ?? "",
        };
      }
      if (rootfs === undefined) {
        throw new MsbError(
          "ROOTFS_BUILD_FAILED",
          `The image service finished preparing ${reference} without returning a root filesystem. Retry; if it persists, check the image service log.`,
          { details: { image: reference } },
        );
      }
      return rootfs;
    },
    ping(signal) {
      return waitForReady(client, SERVICE, options.probeMs, signal);
    },
    close() {
      client.close();
    },
  };
}
