import { randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, rename, rm, stat } from "node:fs/promises";
import { join, posix } from "node:path";
import { MsbError } from "@msb/errors";
import type { Rootfs } from "@msb/proto";
import { progress, withProgress, type Operation } from "../progress.js";
import { layerCompression } from "../registry/manifest.js";
import { digestHex } from "../store/blob-store.js";
import { fsyncDir } from "../store/fs-util.js";
import type { ImageCatalog, LocalImage } from "../store/images.js";
import { unpackLayer } from "../unpack/unpack.js";
import { mkfsErofs } from "./erofs.js";

export interface RootfsDeps {
  readonly catalog: ImageCatalog;
}

/** `$MSB_HOME/images/rootfs/<manifest hex>.erofs`. */
export function rootfsPath(catalog: ImageCatalog, manifestDigest: string): string {
  return join(catalog.rootfsDir, `${digestHex(manifestDigest)}.erofs`);
}

const building = new Map<string, Promise<void>>();

/**
 * The erofs root filesystem of a local image, built when missing: layers unpacked in
 * manifest order into a scratch tree under `tmp/`, the image's working directory created,
 * `mkfs.erofs` into a temp file, fsync, rename. Concurrent requests build once (in-process
 * promise + a lock file across processes); a failed build leaves nothing behind.
 */
export async function* buildRootfs(
  deps: RootfsDeps,
  image: LocalImage,
  signal?: AbortSignal,
): Operation<Rootfs> {
  const { catalog } = deps;
  const path = rootfsPath(catalog, image.record.manifestDigest);
  const describe = async (cached: boolean): Promise<Rootfs> => ({
    path,
    format: "erofs",
    sizeBytes: (await stat(path)).size,
    image: catalog.toProto(image),
    cached,
  });
  if (await exists(path)) return await describe(true);
  const hex = digestHex(image.record.manifestDigest);
  const running = building.get(hex);
  if (running !== undefined) {
    yield progress({
      phase: "waiting",
      message: `another request is building the rootfs of ${image.key}`,
    });
    await running;
    return await describe(true);
  }
  let done!: () => void;
  let failed!: (err: unknown) => void;
  const shared = new Promise<void>((resolve, reject) => {
    done = resolve;
    failed = reject;
  });
  shared.catch(() => undefined);
  building.set(hex, shared);
  try {
    const result = yield* withProgress((emit) =>
      catalog.pinned([image.record.manifestDigest], () => build(emit)),
    );
    done();
    return result;
  } catch (err) {
    failed(err);
    throw err;
  } finally {
    building.delete(hex);
  }

  async function build(emit: (p: ReturnType<typeof progress>) => void): Promise<Rootfs> {
    const release = await catalog.store.lock(`rootfs-${hex}`, signal);
    const work = join(
      catalog.store.tmpDir,
      `rootfs-${hex.slice(0, 16)}-${randomBytes(4).toString("hex")}`,
    );
    try {
      if (await exists(path)) return await describe(true);
      const tree = join(work, "tree");
      await mkdir(tree, { recursive: true, mode: 0o755 });
      const layers = image.manifest.layers;
      const totalBytes = layers.reduce((n, l) => n + l.size, 0);
      let doneBytes = 0;
      for (const [i, layer] of layers.entries()) {
        if (!(await catalog.store.has(layer.digest))) {
          throw new MsbError(
            "IMAGE_NOT_FOUND",
            `Layer ${layer.digest} of ${image.key} is missing from the store. Pull the image again.`,
            { details: { reference: image.key, digest: layer.digest } },
          );
        }
        emit(
          progress({
            phase: "unpacking",
            digest: layer.digest,
            currentTotalBytes: layer.size,
            doneBytes,
            totalBytes,
            doneItems: i,
            totalItems: layers.length,
            message: `unpacking layer ${i + 1}/${layers.length}`,
          }),
        );
        await unpackLayer(tree, createReadStream(catalog.store.blobPath(layer.digest)), {
          compression: layerCompression(layer.mediaType),
          digest: layer.digest,
          ...(signal ? { signal } : {}),
        });
        doneBytes += layer.size;
      }
      const workdir = image.config.config?.WorkingDir ?? "";
      if (workdir !== "" && posix.isAbsolute(workdir) && !posix.normalize(workdir).includes("..")) {
        await mkdir(join(tree, posix.normalize(workdir)), { recursive: true, mode: 0o755 }).catch(
          () => undefined,
        );
      }
      emit(
        progress({
          phase: "mkfs",
          doneBytes,
          totalBytes,
          doneItems: layers.length,
          totalItems: layers.length,
          message: "writing erofs",
        }),
      );
      const tmpImage = join(work, "rootfs.erofs");
      await mkfsErofs(tree, tmpImage, signal ? { signal } : {});
      const handle = await open(tmpImage, "r+");
      await handle.sync();
      await handle.close();
      await mkdir(catalog.rootfsDir, { recursive: true });
      await rename(tmpImage, path);
      await fsyncDir(catalog.rootfsDir);
      const result = await describe(false);
      emit(
        progress({
          phase: "done",
          doneBytes,
          totalBytes,
          message: `rootfs ${path} (${result.sizeBytes} bytes)`,
        }),
      );
      return result;
    } finally {
      await rm(work, { recursive: true, force: true, maxRetries: 3 });
      await release();
    }
  }
}

async function exists(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined)) !== undefined;
}
