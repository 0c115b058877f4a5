import { MsbError } from "@msb/errors";
import { progressEvent } from "@msb/proto";
import type {
  ImageProgress,
  ImageStoreBackend,
  ProgressListener,
  StoredImage,
} from "../images/backend.js";

/** Fields of a progress event a test does not care about are zero; the phase is "downloading". */
export function progress(fields: Partial<ImageProgress>): ImageProgress {
  return progressEvent({ phase: "downloading", ...fields });
}

export function storedImage(reference: string, fields: Partial<StoredImage> = {}): StoredImage {
  return {
    reference,
    manifestDigest: `sha256:${"ab".repeat(32)}`,
    platform: "linux/amd64",
    sizeBytes: 1000,
    storedUnixMs: Date.UTC(2026, 10, 27),
    layers: [{ digest: `sha256:${"cd".repeat(32)}`, sizeBytes: 1000 }],
    ...fields,
  };
}

/**
 * An in-memory image store for tests of the control plane's image methods: `remote` is what
 * "registries" hold, `images` the local store. Calls are recorded; `failWith` makes the next
 * call throw after `progressBeforeFailure` events.
 */
export class FakeImageStore implements ImageStoreBackend {
  readonly images = new Map<string, StoredImage>();
  readonly remote = new Map<string, StoredImage>();
  readonly calls: { method: string; args: unknown[] }[] = [];
  /** Events each pull/build/push sends before it answers. */
  progressEvents: ImageProgress[] = [];
  failWith: MsbError | undefined;

  private async stream(listener: ProgressListener): Promise<void> {
    for (const p of this.progressEvents) {
      listener(p);
      await Promise.resolve();
    }
    const err = this.failWith;
    if (err !== undefined) {
      this.failWith = undefined;
      throw err;
    }
  }

  async pull(
    reference: string,
    platform: string,
    _signal: AbortSignal,
    onProgress: ProgressListener,
  ): Promise<StoredImage> {
    this.calls.push({ method: "pull", args: [reference, platform] });
    const image = this.remote.get(reference);
    if (image === undefined) {
      throw new MsbError("IMAGE_NOT_FOUND", `${reference} does not exist in its registry.`);
    }
    await this.stream(onProgress);
    this.images.set(reference, image);
    return image;
  }

  list(): Promise<StoredImage[]> {
    this.calls.push({ method: "list", args: [] });
    return Promise.resolve([...this.images.values()]);
  }

  remove(reference: string): Promise<{ removedDigests: string[] }> {
    this.calls.push({ method: "remove", args: [reference] });
    const image = this.images.get(reference);
    if (image === undefined) {
      return Promise.reject(
        new MsbError("IMAGE_NOT_FOUND", `${reference} is not in the local store.`),
      );
    }
    this.images.delete(reference);
    return Promise.resolve({ removedDigests: [image.manifestDigest] });
  }

  async build(
    request: { definitionDir: string; tag: string; noCache: boolean },
    _signal: AbortSignal,
    onProgress: ProgressListener,
  ): Promise<StoredImage> {
    this.calls.push({ method: "build", args: [request] });
    await this.stream(onProgress);
    const image = storedImage(
      request.tag === "" ? "docker.io/microsandbox/built:latest" : request.tag,
    );
    this.images.set(image.reference, image);
    return image;
  }

  async push(
    reference: string,
    target: string,
    _signal: AbortSignal,
    onProgress: ProgressListener,
  ): Promise<{ target: string; manifestDigest: string }> {
    this.calls.push({ method: "push", args: [reference, target] });
    const image = this.images.get(reference);
    if (image === undefined) {
      throw new MsbError("IMAGE_NOT_FOUND", `${reference} is not in the local store.`);
    }
    await this.stream(onProgress);
    const to = target === "" ? reference : target;
    this.remote.set(to, { ...image, reference: to });
    return { target: to, manifestDigest: image.manifestDigest };
  }
}
