import { createReadStream } from "node:fs";
import { copyFile, link, mkdir, open, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join, posix } from "node:path";
import { MsbError } from "@msb/errors";
import type { Rootfs } from "@msb/proto";
import { progress, withProgress, type Operation } from "../progress.js";
import { layerCompression } from "../registry/manifest.js";
import { digestHex } from "../store/blob-store.js";
import { acquireFileLock, fsyncDir, ownedTempName } from "../store/fs-util.js";
import type { ImageCatalog, LocalImage } from "../store/images.js";
import { unpackLayer, type DeviceEntry, type StrippedMode } from "../unpack/unpack.js";
import { mkfsErofsRunner, type MkfsRunner } from "./erofs.js";

export interface RootfsDeps {
  readonly catalog: ImageCatalog;
  /**
   * `MSB_CACHE_DIR`: built rootfs files are shared by every `MSB_HOME` through
   * `<cacheDir>/rootfs/<manifest hex>-<mkfs identity>.erofs` (hard links, copies across
   * filesystems). Absent = no sharing.
   */
  readonly cacheDir?: string;
  /** `MSB_ROOTFS_CACHE` (default on): `false` builds every rootfs per home. */
  readonly rootfsCache?: boolean;
  /** Default: the real `mkfs.erofs`. */
  readonly mkfs?: MkfsRunner;
  /** Uncompressed bytes a layer / the whole image may unpack to (no cap when absent). */
  readonly limits?: UnpackLimits;
}

export interface UnpackLimits {
  readonly maxLayerBytes: number;
  readonly maxImageBytes: number;
}

/** Where the rootfs records what the host did not apply (setuid bits, device nodes). */
export const UNPACK_METADATA_PATH = ".msb/unpack-metadata.json";

const defaultMkfs = mkfsErofsRunner();
const EROFS_MAGIC = 0xe0f5e1e2;
const EROFS_MAGIC_OFFSET = 1024;

/** Whether `path` looks like an erofs image: non-empty, superblock magic at offset 1024. */
export async function isErofsFile(path: string): Promise<boolean> {
  const handle = await open(path, "r").catch(() => undefined);
  if (handle === undefined) return false;
  try {
    if ((await handle.stat()).size <= 0) return false;
    const buf = Buffer.alloc(4);
    const { bytesRead } = await handle.read(buf, 0, 4, EROFS_MAGIC_OFFSET);
    return bytesRead === 4 && buf.readUInt32LE(0) === EROFS_MAGIC;
  } finally {
    await handle.close();
  }
}

/**
 * Puts `source` at `dest` atomically: a hard link (a copy when linking fails, e.g. EXDEV)
 * under a temp name in `tmpDir` (same filesystem as `dest`), then rename.
 */
async function linkOrCopy(source: string, dest: string, tmpDir: string): Promise<void> {
  await mkdir(tmpDir, { recursive: true });
  await mkdir(dirname(dest), { recursive: true });
  const tmp = join(tmpDir, ownedTempName(".rootfs-", ".tmp"));
  try {
    try {
      await link(source, tmp);
    } catch {
      await copyFile(source, tmp);
      const handle = await open(tmp, "r+");
      try {
        await handle.sync();
      } finally {
        await handle.close();
      }
    }
    await rename(tmp, dest);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await fsyncDir(dirname(dest));
}

/** `$MSB_HOME/images/rootfs/<manifest hex>.erofs`. */
export function rootfsPath(catalog: ImageCatalog, manifestDigest: string): string {
  return join(catalog.rootfsDir, `${digestHex(manifestDigest)}.erofs`);
}

interface CacheEntry {
  readonly dir: string;
  readonly key: string;
  readonly path: string;
}

/** In-process builds, by home rootfs path (two homes in one process build separately). */
const building = new Map<string, Promise<void>>();

/**
 * The erofs root filesystem of a local image, built when missing: layers unpacked in
 * manifest order into a scratch tree under `tmp/`, the image's working directory created,
 * `mkfs.erofs` into a temp file, fsync, rename. Concurrent requests build once (in-process
 * promise + a lock file across processes); a failed build leaves nothing behind.
 *
 * With the machine cache on, a home that lacks the file first hard-links the cache's copy
 * (checked: non-empty, erofs magic; a bad entry is deleted and rebuilt), and a fresh build
 * is linked into the cache. The cache's lock file makes homes building the same key at
 * once build it once. Removing an image from a home removes only the home's link.
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
  const running = building.get(path);
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
  building.set(path, shared);
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
    building.delete(path);
  }

  async function build(emit: (p: ReturnType<typeof progress>) => void): Promise<Rootfs> {
    const release = await catalog.store.lock(`rootfs-${hex}`, signal);
    const work = join(catalog.store.tmpDir, ownedTempName(`rootfs-${hex.slice(0, 16)}-`, ""));
    let releaseCache: (() => Promise<void>) | undefined;
    try {
      if (await exists(path)) return await describe(true);
      let cache = await cacheEntry();
      if (cache !== undefined) {
        releaseCache = await lockCache(cache);
        // An unwritable cache dir only costs the sharing.
        if (releaseCache === undefined) cache = undefined;
      }
      if (cache !== undefined) {
        if (await isErofsFile(cache.path)) {
          await linkOrCopy(cache.path, path, catalog.store.tmpDir);
          const result = await describe(true);
          emit(
            progress({
              phase: "done",
              message: `rootfs ${path} from the machine cache (${result.sizeBytes} bytes)`,
            }),
          );
          return result;
        }
        // Missing or not an erofs image (truncated copy, disk trouble): rebuild it.
        await rm(cache.path, { force: true }).catch(() => undefined);
      }
      // Only root may reach the scratch tree: it holds files owned by the image's uids.
      await mkdir(work, { recursive: true, mode: 0o700 });
      const tree = join(work, "tree");
      await mkdir(tree, { mode: 0o755 });
      const layers = image.manifest.layers;
      const totalBytes = layers.reduce((n, l) => n + l.size, 0);
      let doneBytes = 0;
      let unpackedBytes = 0;
      const stripped: StrippedMode[] = [];
      const devices: DeviceEntry[] = [];
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
        const stats = await unpackLayer(
          tree,
          createReadStream(catalog.store.blobPath(layer.digest)),
          {
            compression: layerCompression(layer.mediaType),
            digest: layer.digest,
            ...(signal ? { signal } : {}),
            ...layerCap(deps.limits, unpackedBytes),
          },
        );
        unpackedBytes += stats.streamBytes;
        stripped.push(...stats.stripped);
        devices.push(...stats.devices);
        doneBytes += layer.size;
      }
      await writeUnpackMetadata(tree, stripped, devices);
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
      await (deps.mkfs ?? defaultMkfs).run(tree, tmpImage, signal);
      const handle = await open(tmpImage, "r+");
      await handle.sync();
      await handle.close();
      await mkdir(catalog.rootfsDir, { recursive: true });
      await rename(tmpImage, path);
      await fsyncDir(catalog.rootfsDir);
      if (cache !== undefined) {
        // Best effort: the home has its rootfs either way.
        await linkOrCopy(path, cache.path, cache.dir).catch(() => undefined);
      }
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
      await releaseCache?.();
      await release();
    }
  }

  async function lockCache(cache: CacheEntry): Promise<(() => Promise<void>) | undefined> {
    try {
      await mkdir(cache.dir, { recursive: true });
      return await acquireFileLock(join(cache.dir, `${cache.key}.lock`), signal, "PrepareRootfs");
    } catch (err) {
      if (signal?.aborted === true) throw err;
      return undefined;
    }
  }

  async function cacheEntry(): Promise<CacheEntry | undefined> {
    if (deps.cacheDir === undefined || deps.rootfsCache === false) return undefined;
    const dir = join(deps.cacheDir, "rootfs");
    const key = `${hex}-${await (deps.mkfs ?? defaultMkfs).identity()}`;
    return { dir, key, path: join(dir, `${key}.erofs`) };
  }
}

/** The cap for the next layer: the layer cap, or what is left of the image's, when smaller. */
function layerCap(
  limits: UnpackLimits | undefined,
  usedBytes: number,
): { maxBytes?: number; maxBytesSetting?: string } {
  if (limits === undefined) return {};
  const left = Math.max(0, limits.maxImageBytes - usedBytes);
  return left < limits.maxLayerBytes
    ? { maxBytes: left, maxBytesSetting: "MSB_IMAGE_MAX_BYTES" }
    : { maxBytes: limits.maxLayerBytes, maxBytesSetting: "MSB_IMAGE_MAX_LAYER_BYTES" };
}

/**
 * Records in the image (`/.msb/unpack-metadata.json`, only when there is something to say)
 * the setuid/setgid bits and device nodes the layers asked for and the host did not apply,
 * so the guest side can see them. Stripped files a later layer removed are left out.
 */
async function writeUnpackMetadata(
  tree: string,
  stripped: readonly StrippedMode[],
  devices: readonly DeviceEntry[],
): Promise<void> {
  const present: StrippedMode[] = [];
  for (const entry of stripped) {
    if (await exists(join(tree, entry.path))) present.push(entry);
  }
  if (present.length === 0 && devices.length === 0) return;
  const path = join(tree, UNPACK_METADATA_PATH);
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  await writeFile(path, `${JSON.stringify({ strippedModes: present, devices }, null, 2)}\n`, {
    mode: 0o644,
  });
}

async function exists(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined)) !== undefined;
}
