import { lstat, readFile, readdir, stat } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { createGzip, gzipSync } from "node:zlib";
import { tarArchive, tempDir, type TempDir } from "@msb/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { unpackLayer } from "./unpack.js";

// Issue 12, "confirm or refute": what a hostile layer can do to the host while it is unpacked
// (the scratch tree lives on the host until mkfs.erofs has read it).

const DIGEST = `sha256:${"1".repeat(64)}`;

/** A ustar entry for a character or block device (tarArchive knows files, dirs and links). */
function deviceEntry(path: string, kind: "char" | "block", major: number, minor: number): Buffer {
  const archive = tarArchive([{ path, content: "", mode: 0o666 }]);
  const header = archive.subarray(0, 512);
  header.write(kind === "char" ? "3" : "4", 156);
  header.write(`${major.toString(8).padStart(7, "0")}\0`, 329);
  header.write(`${minor.toString(8).padStart(7, "0")}\0`, 337);
  header.write("        ", 148);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  return archive.subarray(0, archive.length - 1024);
}

/**
 * A gzip stream of a tar holding one file of `sizeBytes` zeros, compressed on the fly (about
 * 1 KiB per MiB): what a "small gzip bomb" layer is.
 */
function gzipBomb(sizeBytes: number): Readable {
  const header = tarArchive([{ path: "bomb", content: "" }]).subarray(0, 512);
  header.write(`${sizeBytes.toString(8).padStart(11, "0")}\0`, 124);
  header.write("        ", 148);
  let sum = 0;
  for (const byte of header) sum += byte;
  header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148);
  const chunk = Buffer.alloc(1024 * 1024);
  function* tar() {
    yield Buffer.from(header);
    for (let left = sizeBytes; left > 0; left -= chunk.length) {
      yield left >= chunk.length ? chunk : chunk.subarray(0, left);
    }
    yield Buffer.alloc(1024);
  }
  return Readable.from(tar()).pipe(createGzip({ level: 9 }));
}

describe("unpacking a hostile layer on the host", () => {
  let dir: TempDir;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(() => dir.remove());

  it("stops a gzip bomb at the per-layer cap with IMAGE_LAYER_INVALID, before it fills the disk", async () => {
    const capBytes = 8 * 1024 * 1024;
    const err = await unpackLayer(dir.path, gzipBomb(64 * 1024 * 1024), {
      compression: "gzip",
      digest: DIGEST,
      maxBytes: capBytes,
    }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toMatchObject({
      code: "IMAGE_LAYER_INVALID",
      details: { digest: DIGEST, reason: "too large", limitBytes: capBytes },
    });
    const written = (await stat(join(dir.path, "bomb")).catch(() => undefined))?.size ?? 0;
    expect(written).toBeLessThanOrEqual(capBytes);
  });

  it("strips setuid and setgid bits: no file on the host gets them", async () => {
    const stats = await unpackLayer(
      dir.path,
      Readable.from([
        gzipSync(
          tarArchive([
            { path: "usr/bin/", type: "dir", mode: 0o2755 },
            { path: "usr/bin/su", content: "#!/bin/sh\n", mode: 0o4755, uid: 0 },
            { path: "usr/bin/wall", content: "#!/bin/sh\n", mode: 0o2755, gid: 5 },
            { path: "tmp/", type: "dir", mode: 0o1777 },
          ]),
        ),
      ]),
      { compression: "gzip", digest: DIGEST },
    );
    expect((await stat(join(dir.path, "usr/bin/su"))).mode & 0o7777).toBe(0o755);
    expect((await stat(join(dir.path, "usr/bin/wall"))).mode & 0o7777).toBe(0o755);
    // Directories keep setgid (inheritance of the group, no privilege) and sticky bits.
    expect((await stat(join(dir.path, "usr/bin"))).mode & 0o7777).toBe(0o2755);
    expect((await stat(join(dir.path, "tmp"))).mode & 0o7777).toBe(0o1777);
    expect(stats.stripped).toEqual([
      { path: "usr/bin/su", mode: 0o4755 },
      { path: "usr/bin/wall", mode: 0o2755 },
    ]);
  });

  it("creates no device nodes on the host: they are recorded, not made", async () => {
    const layer = Buffer.concat([
      deviceEntry("dev/sda", "block", 8, 0),
      deviceEntry("mem", "char", 1, 1),
      Buffer.alloc(1024),
    ]);
    const stats = await unpackLayer(dir.path, Readable.from([layer]), {
      compression: "none",
      digest: DIGEST,
    });
    expect(await readdir(dir.path)).toEqual(["dev"]);
    expect(await readdir(join(dir.path, "dev"))).toEqual([]);
    expect(stats.devices).toEqual([
      { path: "dev/sda", type: "block", major: 8, minor: 0, mode: 0o666, uid: 0, gid: 0 },
      { path: "mem", type: "char", major: 1, minor: 1, mode: 0o666, uid: 0, gid: 0 },
    ]);
    await expect(lstat(join(dir.path, "mem"))).rejects.toMatchObject({ code: "ENOENT" });
    await expect(readFile(join(dir.path, "dev/sda"))).rejects.toMatchObject({ code: "ENOENT" });
  });
});
