import { readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { MsbError } from "@msb/errors";
import type { Image } from "@msb/proto";
import {
  imageConfigSchema,
  imageManifestSchema,
  type ImageConfigBlob,
  type ImageManifest,
} from "../registry/manifest.js";
import { formatReference, parseReference, type ImageReference } from "../reference.js";
import { digestHex, type BlobStore } from "./blob-store.js";
import type { RefIndex, RefRecord } from "./refs.js";

/** A local image: its name, record, manifest and config, all read from the store. */
export interface LocalImage {
  readonly key: string;
  readonly ref: ImageReference;
  readonly record: RefRecord;
  readonly manifest: ImageManifest;
  readonly manifestBytes: Buffer;
  readonly config: ImageConfigBlob;
}

export interface ImageCatalog {
  readonly store: BlobStore;
  readonly refs: RefIndex;
  readonly rootfsDir: string;
  /** The local image for a reference, or undefined. */
  find(reference: string): Promise<LocalImage | undefined>;
  /** Like find, but throws IMAGE_NOT_FOUND with what to do. */
  get(reference: string): Promise<LocalImage>;
  list(): Promise<LocalImage[]>;
  toProto(image: LocalImage): Image;
  /**
   * Deletes blobs and rootfs files that no local image references and no running operation
   * has pinned; returns the removed blob digests.
   */
  collectGarbage(): Promise<string[]>;
  /** Keeps digests from garbage collection while `fn` runs (pulls and builds in flight). */
  pinned<T>(digests: readonly string[], fn: () => Promise<T>): Promise<T>;
}

export function createImageCatalog(store: BlobStore, refs: RefIndex): ImageCatalog {
  const rootfsDir = join(store.root, "rootfs");
  const pins = new Map<string, number>();

  async function load(key: string, ref: ImageReference, record: RefRecord): Promise<LocalImage> {
    const manifestBytes = await store.read(record.manifestDigest).catch(() => {
      throw new MsbError(
        "IMAGE_NOT_FOUND",
        `The local store lists ${key} but its manifest blob is missing. Pull the image again.`,
        { details: { reference: key } },
      );
    });
    const manifest = imageManifestSchema.parse(JSON.parse(manifestBytes.toString("utf8")));
    const configBytes = await store.read(manifest.config.digest).catch(() => {
      throw new MsbError(
        "IMAGE_NOT_FOUND",
        `The local store lists ${key} but its config blob is missing. Pull the image again.`,
        { details: { reference: key } },
      );
    });
    const config = imageConfigSchema.parse(JSON.parse(configBytes.toString("utf8")));
    return { key, ref, record, manifest, manifestBytes, config };
  }

  const catalog: ImageCatalog = {
    store,
    refs,
    rootfsDir,
    async find(reference) {
      const ref = parseReference(reference);
      const key = formatReference(ref);
      const record = await refs.get(key);
      return record === undefined ? undefined : load(key, ref, record);
    },
    async get(reference) {
      const image = await catalog.find(reference);
      if (image === undefined) {
        const key = formatReference(parseReference(reference));
        throw new MsbError(
          "IMAGE_NOT_FOUND",
          `No image ${key} in the local store. Pull it (PullImage, or 'node apps/image-service/dist/cli.js pull ${reference}') or build it from images/.`,
          { details: { reference: key } },
        );
      }
      return image;
    },
    async list() {
      const all = await refs.all();
      const images: LocalImage[] = [];
      for (const [key, record] of Object.entries(all).sort(([a], [b]) => a.localeCompare(b))) {
        images.push(await load(key, parseReference(key), record));
      }
      return images;
    },
    toProto(image) {
      const c = image.config.config ?? {};
      return {
        reference: image.key,
        registry: image.ref.registry,
        repository: image.ref.repository,
        tag: image.ref.tag ?? "",
        manifestDigest: image.record.manifestDigest,
        configDigest: image.manifest.config.digest,
        platform: image.record.platform,
        layers: image.manifest.layers.map((l) => ({
          digest: l.digest,
          mediaType: l.mediaType,
          sizeBytes: l.size,
        })),
        compressedSizeBytes: image.manifest.layers.reduce((n, l) => n + l.size, 0),
        storedUnixMs: image.record.storedUnixMs,
        config: {
          env: c.Env ?? [],
          entrypoint: c.Entrypoint ?? [],
          cmd: c.Cmd ?? [],
          workingDir: c.WorkingDir ?? "",
          user: c.User ?? "",
          labels: c.Labels ?? {},
        },
      };
    },
    async collectGarbage() {
      const keep = new Set<string>(pins.keys());
      const manifests = new Set<string>();
      for (const image of await catalog.list().catch(() => [] as LocalImage[])) {
        keep.add(image.record.manifestDigest);
        manifests.add(digestHex(image.record.manifestDigest));
        keep.add(image.manifest.config.digest);
        for (const layer of image.manifest.layers) keep.add(layer.digest);
      }
      const removed: string[] = [];
      for (const digest of await store.list()) {
        if (keep.has(digest)) continue;
        await store.remove(digest);
        removed.push(digest);
      }
      for (const name of await readdir(rootfsDir).catch(() => [] as string[])) {
        const hex = /^([a-f0-9]{64})\.erofs$/.exec(name)?.[1];
        if (hex !== undefined && !manifests.has(hex) && !pins.has(`sha256:${hex}`)) {
          await rm(join(rootfsDir, name), { force: true });
        }
      }
      return removed;
    },
    async pinned(digests, fn) {
      for (const d of digests) pins.set(d, (pins.get(d) ?? 0) + 1);
      try {
        return await fn();
      } finally {
        for (const d of digests) {
          const n = (pins.get(d) ?? 1) - 1;
          if (n === 0) pins.delete(d);
          else pins.set(d, n);
        }
      }
    },
  };
  return catalog;
}
