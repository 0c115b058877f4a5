import { MsbError } from "@msb/errors";
import {
  ImageServiceService,
  createTypedClient,
  type Image,
  type Progress,
} from "@msb/proto";
import type { ImageProgress, ImageStoreBackend, StoredImage } from "./backend.js";

const SERVICE = "image service";

export interface GrpcImageStoreOptions {
  /** `unix:/path` or `host:port`. */
  readonly address: string;
  /** Deadline of a pull, build or push. */
  readonly longOperationMs: number;
  /** Deadline of a list or remove. */
  readonly unaryMs: number;
}

export interface GrpcImageStore extends ImageStoreBackend {
  close(): void;
}

/** ImageStoreBackend over the image-service's gRPC API (proto/msb/image/v1). */
export function createGrpcImageStore(options: GrpcImageStoreOptions): GrpcImageStore {
  const client = createTypedClient(ImageServiceService, options.address, {
    service: SERVICE,
    defaultTimeoutMs: options.unaryMs,
  });
  const long = (signal: AbortSignal) => ({ timeoutMs: options.longOperationMs, signal });
  const missing = (what: string, reference: string) =>
    new MsbError(
      "INTERNAL",
      `The image service finished ${what} ${reference} without its final message.`,
      { details: { image: reference } },
    );
  return {
    async pull(reference, platform, signal, onProgress) {
      let image: StoredImage | undefined;
      for await (const m of client.pullImage({ reference, platform }, long(signal))) {
        if (m.event?.$case === "progress") onProgress(toProgress(m.event.value));
        else if (m.event?.$case === "image") image = toImage(m.event.value);
      }
      if (image === undefined) throw missing("pulling", reference);
      return image;
    },
    async list(signal) {
      const res = await client.listImages({},
        { timeoutMs: options.unaryMs, signal },
      );
      return res.images.map(toImage);
    },
    async remove(reference, signal) {
      const res = await client.removeImage({ reference },
        { timeoutMs: options.unaryMs, signal },
      );
      return { removedDigests: res.removedDigests };
    },
    async build(request, signal, onProgress) {
      let image: StoredImage | undefined;
      for await (const m of client.buildImage(request, long(signal))) {
        if (m.event?.$case === "progress") onProgress(toProgress(m.event.value));
        else if (m.event?.$case === "image") image = toImage(m.event.value);
      }
      if (image === undefined) throw missing("building", request.definitionDir);
      return image;
    },
    async push(reference, target, signal, onProgress) {
      let result: { target: string; manifestDigest: string } | undefined;
      for await (const m of client.pushImage({ reference, target }, long(signal))) {
        if (m.event?.$case === "progress") onProgress(toProgress(m.event.value));
        else if (m.event?.$case === "result") result = { ...m.event.value };
      }
      if (result === undefined) throw missing("pushing", reference);
      return result;
    },
    close() {
      client.close();
    },
  };
}

function toProgress(p: Progress): ImageProgress {
  return {
    phase: p.phase,
    digest: p.digest,
    currentBytes: p.currentBytes,
    currentTotalBytes: p.currentTotalBytes,
    doneBytes: p.doneBytes,
    totalBytes: p.totalBytes,
    doneItems: p.doneItems,
    totalItems: p.totalItems,
    message: p.message,
  };
}

function toImage(i: Image): StoredImage {
  return {
    reference: i.reference,
    manifestDigest: i.manifestDigest,
    platform: i.platform,
    sizeBytes: i.compressedSizeBytes,
    storedUnixMs: i.storedUnixMs,
    layers: i.layers.map((l) => ({ digest: l.digest, sizeBytes: l.sizeBytes })),
  };
}
