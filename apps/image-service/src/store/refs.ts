import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import type { BlobStore } from "./blob-store.js";
import { writeFileAtomic } from "./fs-util.js";

const refRecordSchema = z.object({
  manifestDigest: z.string(),
  platform: z.string(),
  storedUnixMs: z.number(),
});
/** What the store knows about one local image name. */
export type RefRecord = z.infer<typeof refRecordSchema>;

const refsFileSchema = z.object({
  version: z.literal(1),
  images: z.record(refRecordSchema),
});
type RefsFile = z.infer<typeof refsFileSchema>;

/**
 * `$MSB_HOME/images/refs.json`: normalised reference → manifest digest. Every change is a
 * read-modify-write under the store's "refs" lock, written atomically (temp + fsync + rename).
 */
export interface RefIndex {
  get(reference: string): Promise<RefRecord | undefined>;
  all(): Promise<Record<string, RefRecord>>;
  /** Applies `change` to the whole map under the lock and writes the result. */
  update<T>(change: (images: Record<string, RefRecord>) => T, signal?: AbortSignal): Promise<T>;
}

export function createRefIndex(store: BlobStore): RefIndex {
  const path = join(store.root, "refs.json");
  const read = async (): Promise<RefsFile> => {
    const text = await readFile(path, "utf8").catch((err: NodeJS.ErrnoException) => {
      if (err.code === "ENOENT") return undefined;
      throw err;
    });
    if (text === undefined) return { version: 1, images: {} };
    return refsFileSchema.parse(JSON.parse(text));
  };
  return {
    async get(reference) {
      return (await read()).images[reference];
    },
    async all() {
      return (await read()).images;
    },
    async update(change, signal) {
      const release = await store.lock("refs", signal);
      try {
        const file = await read();
        const result = change(file.images);
        await writeFileAtomic(path, `${JSON.stringify(file, null, 2)}\n`);
        return result;
      } finally {
        await release();
      }
    },
  };
}
