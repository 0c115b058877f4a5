/**
 * The image store the control plane manages on behalf of its callers: the image-service's
 * PullImage/ListImages/RemoveImage/BuildImage/PushImage as the control plane needs them.
 * Production: `createGrpcImageStore` (over gRPC); tests: an in-memory fake. Implementations add
 * their own deadlines and throw MsbError (the image-service's own code, SERVICE_UNAVAILABLE
 * when it is down).
 */

/** One progress event of a long operation (proto `msb.image.v1.Progress`). */
export interface ImageProgress {
  /** "resolving", "downloading", "building", "pushing", "done", … */
  readonly phase: string;
  /** The blob this event is about ("" when none). */
  readonly digest: string;
  readonly currentBytes: number;
  readonly currentTotalBytes: number;
  readonly doneBytes: number;
  readonly totalBytes: number;
  readonly doneItems: number;
  readonly totalItems: number;
  /** A line for people (build step output, status); "" when none. */
  readonly message: string;
}

export interface StoredLayer {
  readonly digest: string;
  readonly sizeBytes: number;
}

/** An image in the local store. */
export interface StoredImage {
  /** Normalised, e.g. `docker.io/microsandbox/python:latest`. */
  readonly reference: string;
  readonly manifestDigest: string;
  readonly platform: string;
  /** Sum of the compressed layer sizes. */
  readonly sizeBytes: number;
  /** When the image entered the local store (Unix ms; 0 when unknown). */
  readonly storedUnixMs: number;
  readonly layers: readonly StoredLayer[];
}

export type ProgressListener = (progress: ImageProgress) => void;

export interface ImageStoreBackend {
  pull(
    reference: string,
    platform: string,
    signal: AbortSignal,
    onProgress: ProgressListener,
  ): Promise<StoredImage>;
  list(signal: AbortSignal): Promise<StoredImage[]>;
  /** Throws IMAGE_NOT_FOUND when the store does not hold `reference`. */
  remove(reference: string, signal: AbortSignal): Promise<{ removedDigests: string[] }>;
  build(
    request: { definitionDir: string; tag: string; noCache: boolean },
    signal: AbortSignal,
    onProgress: ProgressListener,
  ): Promise<StoredImage>;
  push(
    reference: string,
    target: string,
    signal: AbortSignal,
    onProgress: ProgressListener,
  ): Promise<{ target: string; manifestDigest: string }>;
}
