import type { PushResult } from "@msb/proto";
import { progress, withProgress, type Operation } from "./progress.js";
import { formatReference, parseReference } from "./reference.js";
import type { RegistryClientFactory } from "./registry/client.js";
import { MEDIA_TYPES } from "./registry/manifest.js";
import type { ImageCatalog } from "./store/images.js";

export interface PushDeps {
  readonly catalog: ImageCatalog;
  readonly registries: RegistryClientFactory;
}

/**
 * Pushes a local image to `target` (default: its own name): each layer and the config unless
 * the registry has it (HEAD), as a monolithic POST+PUT upload, then the manifest (the exact
 * bytes in the store, so the digest is unchanged) under the target's tag or digest.
 */
export async function* pushImage(
  deps: PushDeps,
  reference: string,
  targetText: string,
  signal?: AbortSignal,
): Operation<PushResult> {
  const image = await deps.catalog.get(reference);
  const target = parseReference(targetText.trim() === "" ? image.key : targetText);
  const repo = deps.registries.repository(target.registry, target.repository, "push");
  const blobs = [...image.manifest.layers, image.manifest.config];
  const totalBytes = blobs.reduce((n, b) => n + b.size, 0);
  return yield* withProgress(async (emit) => {
    let doneBytes = 0;
    let doneItems = 0;
    for (const blob of blobs) {
      const exists = await repo.hasBlob(blob.digest, signal);
      if (!exists) {
        emit(
          progress({
            phase: "pushing",
            digest: blob.digest,
            currentTotalBytes: blob.size,
            doneBytes,
            totalBytes,
            doneItems,
            totalItems: blobs.length,
          }),
        );
        await repo.uploadBlob(
          blob.digest,
          blob.size,
          deps.catalog.store.blobPath(blob.digest),
          signal,
        );
      }
      doneBytes += blob.size;
      doneItems += 1;
      emit(
        progress({
          phase: exists ? "exists" : "pushed",
          digest: blob.digest,
          currentBytes: blob.size,
          currentTotalBytes: blob.size,
          doneBytes,
          totalBytes,
          doneItems,
          totalItems: blobs.length,
        }),
      );
    }
    const mediaType = image.manifest.mediaType ?? MEDIA_TYPES.ociManifest;
    const tagOrDigest = target.tag ?? target.digest ?? "latest";
    await repo.putManifest(tagOrDigest, image.manifestBytes, mediaType, signal);
    const pushed = formatReference(target);
    emit(
      progress({
        phase: "done",
        doneBytes,
        totalBytes,
        doneItems,
        totalItems: blobs.length,
        message: `pushed ${pushed}`,
      }),
    );
    return { target: pushed, manifestDigest: image.record.manifestDigest };
  });
}
