import { MsbError } from "@msb/errors";
import type { Image } from "@msb/proto";
import { progress, throttle, withProgress, type Operation } from "./progress.js";
import { formatReference, manifestReference, parseReference } from "./reference.js";
import type { RegistryClientFactory } from "./registry/client.js";
import {
  assertLayerSupported,
  formatPlatform,
  imageConfigSchema,
  parseManifest,
  parsePlatform,
  selectPlatform,
} from "./registry/manifest.js";
import type { UnpackLimits } from "./rootfs/prepare.js";
import type { ImageCatalog } from "./store/images.js";

export interface PullDeps {
  readonly catalog: ImageCatalog;
  readonly registries: RegistryClientFactory;
  /** Images whose layers cannot fit are refused before any download. */
  readonly limits?: UnpackLimits;
}

/** A layer (compressed) larger than the uncompressed caps allow can never be unpacked. */
function assertFits(
  key: string,
  layers: readonly { digest: string; size: number }[],
  limits?: UnpackLimits,
): void {
  if (limits === undefined) return;
  let total = 0;
  for (const layer of layers) {
    total += layer.size;
    const [limitBytes, setting] =
      layer.size > limits.maxLayerBytes
        ? [limits.maxLayerBytes, "MSB_IMAGE_MAX_LAYER_BYTES"]
        : total > limits.maxImageBytes
          ? [limits.maxImageBytes, "MSB_IMAGE_MAX_BYTES"]
          : [undefined, ""];
    if (limitBytes !== undefined) {
      throw new MsbError(
        "IMAGE_LAYER_INVALID",
        `Image ${key} is larger than ${limitBytes} bytes (layer ${layer.digest}), the limit ${setting} sets; nothing was downloaded. Use a smaller image, or ask the operator to raise the limit.`,
        { details: { reference: key, digest: layer.digest, reason: "too large", limitBytes } },
      );
    }
  }
}

function digestMismatch(what: string, want: string, got: string): MsbError {
  return new MsbError(
    "IMAGE_DIGEST_MISMATCH",
    `The registry's ${what} hashes to ${got}, not ${want}. It was discarded; retry, and if it persists the registry serves corrupt content.`,
    { details: { expected: want, actual: got } },
  );
}

/**
 * Pulls `reference` for `platform` into the store: manifest (through an index / manifest
 * list when there is one), config, then layers in manifest order, each verified against its
 * digest while streaming and skipped when already present. The name is recorded last, so an
 * interrupted pull never yields a half image.
 */
export async function* pullImage(
  deps: PullDeps,
  reference: string,
  platformText: string,
  signal?: AbortSignal,
): Operation<Image> {
  const { catalog, registries } = deps;
  const ref = parseReference(reference);
  const platform = parsePlatform(platformText);
  const key = formatReference(ref);
  yield progress({
    phase: "resolving",
    message: `resolving ${key} for ${formatPlatform(platform)}`,
  });
  const repo = registries.repository(ref.registry, ref.repository, "pull");
  const top = await repo.getManifest(manifestReference(ref), signal);
  if (ref.digest !== undefined && top.digest !== ref.digest) {
    throw digestMismatch("manifest", ref.digest, top.digest);
  }
  let fetched = top;
  let parsed = parseManifest(top.bytes, top.contentType);
  if (parsed.kind === "index") {
    const chosen = selectPlatform(parsed.index, platform);
    fetched = await repo.getManifest(chosen.digest, signal);
    if (fetched.digest !== chosen.digest)
      throw digestMismatch("manifest", chosen.digest, fetched.digest);
    parsed = parseManifest(fetched.bytes, fetched.contentType);
    if (parsed.kind !== "image") {
      throw new MsbError(
        "IMAGE_PULL_FAILED",
        `The index of ${key} points to another index for ${formatPlatform(platform)}; msb does not follow nested indexes.`,
        { details: { reference: key } },
      );
    }
  }
  const manifest = parsed.manifest;
  for (const layer of manifest.layers) assertLayerSupported(layer);
  assertFits(key, manifest.layers, deps.limits);
  const blobs = [manifest.config, ...manifest.layers];
  const totalBytes = blobs.reduce((n, b) => n + b.size, 0);
  const digests = [fetched.digest, ...blobs.map((b) => b.digest)];

  return yield* withProgress((emit) =>
    catalog.pinned(digests, async () => {
      let doneBytes = 0;
      let doneItems = 0;
      const startedMs = Date.now();
      let fetchedBytes = 0;
      for (const blob of blobs) {
        const tick = throttle(250);
        const base = {
          digest: blob.digest,
          currentTotalBytes: blob.size,
          totalBytes,
          totalItems: blobs.length,
        };
        const result = await catalog.store.ensure(
          blob.digest,
          blob.size,
          repo.blobOpener(blob.digest),
          {
            ...(signal ? { signal } : {}),
            onProgress: (current) => {
              if (!tick(current === blob.size)) return;
              emit(
                progress({
                  phase: "downloading",
                  ...base,
                  currentBytes: current,
                  doneBytes: doneBytes + current,
                  doneItems,
                }),
              );
            },
          },
        );
        doneBytes += blob.size;
        doneItems += 1;
        if (result.fetched) fetchedBytes += blob.size;
        emit(
          progress({
            phase: result.fetched ? "downloaded" : "exists",
            ...base,
            currentBytes: blob.size,
            doneBytes,
            doneItems,
          }),
        );
      }
      await catalog.store.put(fetched.bytes, fetched.digest);
      let configDoc: unknown;
      try {
        configDoc = JSON.parse((await catalog.store.read(manifest.config.digest)).toString("utf8"));
      } catch {
        configDoc = undefined;
      }
      const config = imageConfigSchema.safeParse(configDoc);
      if (!config.success) {
        // The field path only: never text from the remote document.
        throw new MsbError(
          "IMAGE_PULL_FAILED",
          `The config blob of ${key} is not an image config (${config.error.issues[0]?.path.join(".") || "not JSON"} is missing or invalid). The image is not usable by msb.`,
          { details: { reference: key } },
        );
      }
      await catalog.refs.update((images) => {
        images[key] = {
          manifestDigest: fetched.digest,
          platform: formatPlatform(platform),
          storedUnixMs: Date.now(),
        };
      }, signal);
      const seconds = (Date.now() - startedMs) / 1000;
      emit(
        progress({
          phase: "done",
          doneBytes,
          totalBytes,
          doneItems,
          totalItems: blobs.length,
          message: `pulled ${key}: ${fetchedBytes} bytes fetched in ${seconds.toFixed(1)} s`,
        }),
      );
      return catalog.toProto(await catalog.get(key));
    }),
  );
}
