import { createHash, type Hash } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, open, readFile, readdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { MsbError } from "@msb/errors";
import { acquireFileLock, fsyncDir, sweepDeadTemps } from "./fs-util.js";

/** Bytes of a blob from a source, starting at `offset` when the source can resume. */
export interface BlobSource {
  /** True when the stream starts at the requested offset (HTTP 206), false when at 0. */
  readonly resumed: boolean;
  readonly stream: AsyncIterable<Uint8Array> | Iterable<Uint8Array>;
}

/** Opens a blob's bytes from `offset` (0 unless a partial download exists). */
export type OpenBlob = (offset: number, signal: AbortSignal | undefined) => Promise<BlobSource>;

/** Called as bytes arrive: bytes of this blob so far (including resumed ones). */
export type BlobProgress = (currentBytes: number) => void;

export interface EnsureBlobResult {
  /** False when the blob was already in the store (or another caller fetched it). */
  readonly fetched: boolean;
  readonly sizeBytes: number;
}

const HEX = /^[a-f0-9]{64}$/;

export function digestHex(digest: string): string {
  const hex = digest.startsWith("sha256:") ? digest.slice(7) : "";
  if (!HEX.test(hex)) {
    throw new MsbError("IMAGE_DIGEST_MISMATCH", `'${digest}' is not a sha256 digest.`, {
      details: { digest },
    });
  }
  return hex;
}

/**
 * The content-addressed blob store under `$MSB_HOME/images`: `blobs/sha256/<hex>` (only ever
 * complete, verified blobs), `tmp/` (partial downloads, `<hex>.partial`, kept for resume
 * after an interruption, deleted on a digest mismatch) and `locks/` (cross-process locks).
 */
export interface BlobStore {
  readonly root: string;
  readonly tmpDir: string;
  blobPath(digest: string): string;
  has(digest: string): Promise<boolean>;
  sizeOf(digest: string): Promise<number | undefined>;
  read(digest: string): Promise<Buffer>;
  /**
   * Makes sure the blob is in the store: fetches it through `open` unless present, verifying
   * size and digest while streaming. Concurrent calls for one digest fetch it once (in this
   * process through a shared promise, across processes through a lock file).
   */
  ensure(
    digest: string,
    expectedSize: number | undefined,
    openBlob: OpenBlob,
    options?: { signal?: AbortSignal; onProgress?: BlobProgress },
  ): Promise<EnsureBlobResult>;
  /** Stores bytes already in memory (manifests, configs); returns their digest. */
  put(bytes: Uint8Array, expectedDigest?: string): Promise<string>;
  remove(digest: string): Promise<void>;
  list(): Promise<string[]>;
  /** Takes the store-wide lock of `name` (e.g. "refs", "rootfs-<hex>"). */
  lock(name: string, signal?: AbortSignal): Promise<() => Promise<void>>;
}

export async function createBlobStore(root: string): Promise<BlobStore> {
  const blobsDir = join(root, "blobs", "sha256");
  const tmpDir = join(root, "tmp");
  const locksDir = join(root, "locks");
  await Promise.all([blobsDir, tmpDir, locksDir].map((d) => mkdir(d, { recursive: true })));
  // What a writer killed mid-write left (rootfs work trees, temp files of atomic writes);
  // partial blobs stay, the next pull resumes them.
  await sweepDeadTemps(tmpDir);
  await sweepDeadTemps(root);
  const inflight = new Map<string, Promise<EnsureBlobResult>>();
  const blobPath = (digest: string): string => join(blobsDir, digestHex(digest));
  const sizeOf = async (digest: string): Promise<number | undefined> =>
    (await stat(blobPath(digest)).catch(() => undefined))?.size;

  const lock = (name: string, signal?: AbortSignal) =>
    acquireFileLock(join(locksDir, `${name}.lock`), signal, `locking ${name}`);

  async function hashExisting(path: string, hash: Hash): Promise<number> {
    let size = 0;
    for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) {
      hash.update(chunk);
      size += chunk.length;
    }
    return size;
  }

  async function fetchInto(
    digest: string,
    expectedSize: number | undefined,
    openBlob: OpenBlob,
    signal: AbortSignal | undefined,
    onProgress: BlobProgress | undefined,
  ): Promise<EnsureBlobResult> {
    const hex = digestHex(digest);
    const partial = join(tmpDir, `${hex}.partial`);
    let hash = createHash("sha256");
    let offset = (await stat(partial).catch(() => undefined))?.size ?? 0;
    if (expectedSize !== undefined && offset > expectedSize) offset = 0;
    if (offset > 0) await hashExisting(partial, hash);
    const source = await openBlob(offset, signal);
    if (offset > 0 && !source.resumed) {
      // The source cannot resume and restarted from byte 0: start over.
      offset = 0;
      hash = createHash("sha256");
    }
    return write(source, offset, hash);

    async function write(src: BlobSource, start: number, h: Hash): Promise<EnsureBlobResult> {
      const handle = await open(partial, start === 0 ? "w" : "a", 0o644);
      let size = start;
      let ok = false;
      try {
        // for await also walks a sync iterable; the cast only names the element type.
        for await (const chunk of src.stream as AsyncIterable<Uint8Array>) {
          size += chunk.length;
          if (expectedSize !== undefined && size > expectedSize) {
            throw mismatch(
              digest,
              `it is larger than the ${expectedSize} bytes its descriptor states`,
            );
          }
          h.update(chunk);
          await handle.write(chunk);
          onProgress?.(size);
        }
        await handle.sync();
        ok = true;
      } finally {
        await handle.close();
        // A transfer cut off part-way keeps its partial file so the next pull resumes it
        // with a Range request; an empty or oversized one is junk.
        const overflow = expectedSize !== undefined && size > expectedSize;
        if (!ok && (size === 0 || overflow)) await rm(partial, { force: true });
      }
      const actual = h.digest("hex");
      if (actual !== hex || (expectedSize !== undefined && size !== expectedSize)) {
        await rm(partial, { force: true });
        throw mismatch(
          digest,
          actual !== hex
            ? `its content hashes to sha256:${actual}`
            : `it has ${size} bytes, its descriptor states ${expectedSize}`,
        );
      }
      await rename(partial, join(blobsDir, hex));
      await fsyncDir(blobsDir);
      return { fetched: true, sizeBytes: size };
    }
  }

  const store: BlobStore = {
    root,
    tmpDir,
    blobPath,
    sizeOf,
    async has(digest) {
      return (await sizeOf(digest)) !== undefined;
    },
    read(digest) {
      return readFile(blobPath(digest));
    },
    ensure(digest, expectedSize, openBlob, options = {}) {
      const hex = digestHex(digest);
      const running = inflight.get(hex);
      if (running !== undefined) return running.then((r) => ({ ...r, fetched: false }));
      const task = (async (): Promise<EnsureBlobResult> => {
        const existing = await sizeOf(digest);
        if (existing !== undefined) return { fetched: false, sizeBytes: existing };
        const release = await lock(`blob-${hex}`, options.signal);
        try {
          const now = await sizeOf(digest);
          if (now !== undefined) return { fetched: false, sizeBytes: now };
          return await fetchInto(
            digest,
            expectedSize,
            openBlob,
            options.signal,
            options.onProgress,
          );
        } finally {
          await release();
        }
      })();
      inflight.set(hex, task);
      void task.finally(() => inflight.delete(hex)).catch(() => undefined);
      return task;
    },
    async put(bytes, expectedDigest) {
      const hex = createHash("sha256").update(bytes).digest("hex");
      const digest = `sha256:${hex}`;
      if (expectedDigest !== undefined && expectedDigest !== digest) {
        throw mismatch(expectedDigest, `its content hashes to ${digest}`);
      }
      await store.ensure(digest, bytes.length, () =>
        Promise.resolve<BlobSource>({ resumed: false, stream: [bytes] }),
      );
      return digest;
    },
    async remove(digest) {
      await rm(blobPath(digest), { force: true });
    },
    async list() {
      const names = await readdir(blobsDir).catch(() => [] as string[]);
      return names.filter((n) => HEX.test(n)).map((n) => `sha256:${n}`);
    },
    lock,
  };
  return store;
}

function mismatch(digest: string, why: string): MsbError {
  return new MsbError(
    "IMAGE_DIGEST_MISMATCH",
    `Blob ${digest} failed verification: ${why}. It was discarded; retry, and if it persists the registry serves corrupt content.`,
    { details: { digest, reason: why } },
  );
}
