import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tempDir, type TempDir } from "@msb/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createBlobStore, type BlobStore, type OpenBlob } from "./blob-store.js";

const digestOf = (b: Buffer) => `sha256:${createHash("sha256").update(b).digest("hex")}`;

async function* chunks(data: Buffer, size = 7): AsyncIterable<Buffer> {
  for (let i = 0; i < data.length; i += size) {
    await Promise.resolve();
    yield data.subarray(i, i + size);
  }
}

describe("blob store", () => {
  let dir: TempDir;
  let store: BlobStore;
  const data = Buffer.from("hello, content-addressed world\n".repeat(20));
  const digest = digestOf(data);

  beforeEach(async () => {
    dir = await tempDir();
    store = await createBlobStore(dir.path);
  });
  afterEach(() => dir.remove());

  it("stores a verified blob under its digest and leaves nothing in tmp", async () => {
    const open: OpenBlob = () => Promise.resolve({ resumed: false, stream: chunks(data) });
    const result = await store.ensure(digest, data.length, open);
    expect(result).toEqual({ fetched: true, sizeBytes: data.length });
    expect(await readFile(store.blobPath(digest))).toEqual(data);
    expect(await readdir(store.tmpDir)).toEqual([]);
  });

  it("discards content that does not match its digest", async () => {
    const bad = Buffer.from(data);
    bad[3] = 0;
    const open: OpenBlob = () => Promise.resolve({ resumed: false, stream: chunks(bad) });
    await expect(store.ensure(digest, data.length, open)).rejects.toMatchObject({
      code: "IMAGE_DIGEST_MISMATCH",
      message: expect.stringContaining(digestOf(bad)) as unknown,
    });
    expect(await store.has(digest)).toBe(false);
    expect(await readdir(store.tmpDir)).toEqual([]);
  });

  it("stops reading a blob larger than its descriptor", async () => {
    const open: OpenBlob = () =>
      Promise.resolve({ resumed: false, stream: chunks(Buffer.concat([data, data])) });
    await expect(store.ensure(digest, data.length, open)).rejects.toMatchObject({
      code: "IMAGE_DIGEST_MISMATCH",
      message: expect.stringContaining("larger than") as unknown,
    });
    expect(await readdir(store.tmpDir)).toEqual([]);
  });

  it("fetches a blob once for concurrent callers", async () => {
    let opens = 0;
    const open: OpenBlob = () => {
      opens += 1;
      return Promise.resolve({ resumed: false, stream: chunks(data) });
    };
    const results = await Promise.all([1, 2, 3].map(() => store.ensure(digest, data.length, open)));
    expect(opens).toBe(1);
    expect(results.filter((r) => r.fetched)).toHaveLength(1);
  });

  it("resumes an interrupted download from the partial file", async () => {
    const cut = 100;
    const failing: OpenBlob = () =>
      Promise.resolve({
        resumed: false,
        stream: (async function* () {
          await Promise.resolve();
          yield data.subarray(0, cut);
          throw new Error("connection reset");
        })(),
      });
    await expect(store.ensure(digest, data.length, failing)).rejects.toThrow("connection reset");
    expect(await readdir(store.tmpDir)).toHaveLength(1);
    const offsets: number[] = [];
    const resuming: OpenBlob = (offset) => {
      offsets.push(offset);
      return Promise.resolve({ resumed: true, stream: chunks(data.subarray(offset)) });
    };
    await store.ensure(digest, data.length, resuming);
    expect(offsets).toEqual([cut]);
    expect(await readFile(store.blobPath(digest))).toEqual(data);
    expect(await readdir(store.tmpDir)).toEqual([]);
  });

  it("starts over when the source cannot resume", async () => {
    const hex = digest.slice(7);
    await writeFile(join(store.tmpDir, `${hex}.partial`), "garbage");
    const open: OpenBlob = () => Promise.resolve({ resumed: false, stream: chunks(data) });
    await store.ensure(digest, data.length, open);
    expect(await readFile(store.blobPath(digest))).toEqual(data);
  });
});

describe("blob store opening after a crash", () => {
  it("removes temp files and rootfs work trees of dead writers, keeps live ones and partial blobs", async () => {
    const dir = await tempDir();
    try {
      const tmp = join(dir.path, "tmp");
      await mkdir(join(tmp, "rootfs-0123456789abcdef-2147483646-0123456789ab", "tree"), {
        recursive: true,
      });
      const live = `rootfs-0123456789abcdef-${process.pid}-0123456789ab`;
      await mkdir(join(tmp, live));
      await writeFile(join(tmp, ".rootfs-2147483646-0123456789ab.tmp"), "half");
      await writeFile(join(tmp, `${"a".repeat(64)}.partial`), "resumable");
      await writeFile(join(dir.path, "refs.json.2147483646-0123456789ab.tmp"), "{");
      await writeFile(join(dir.path, "refs.json"), "{}");
      await createBlobStore(dir.path);
      expect((await readdir(tmp)).sort()).toEqual([`${"a".repeat(64)}.partial`, live].sort());
      expect((await readdir(dir.path)).sort()).toEqual(
        ["blobs", "locks", "refs.json", "tmp"].sort(),
      );
    } finally {
      await dir.remove();
    }
  });
});

describe("temp files of a killed writer not yet reaped", () => {
  it("counts a zombie writer as dead", async () => {
    // The inner sleep's parent execs into a sleep that never reaps it: a zombie for 5 s,
    // like a killed image-service whose supervisor died with it.
    const parent = spawn("sh", ["-c", "sleep 0.1 & echo $!; exec sleep 5"], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    const zombie = await new Promise<number>((resolve) =>
      parent.stdout.once("data", (d: Buffer) => resolve(Number(d.toString().trim()))),
    );
    const dir = await tempDir();
    try {
      for (;;) {
        const stat = await readFile(`/proc/${zombie}/stat`, "utf8");
        if (stat.charAt(stat.lastIndexOf(")") + 2) === "Z") break;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
      await mkdir(join(dir.path, "tmp"));
      await writeFile(join(dir.path, "tmp", `.rootfs-${zombie}-0123456789ab.tmp`), "half");
      await createBlobStore(dir.path);
      expect(await readdir(join(dir.path, "tmp"))).toEqual([]);
    } finally {
      parent.kill("SIGKILL");
      await dir.remove();
    }
  });
});
