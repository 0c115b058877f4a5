import { lstat, readFile, readdir, readlink, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { gzipSync } from "node:zlib";
import { tarArchive, tempDir, type TarEntry, type TempDir } from "@msb/testing";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { unpackLayer } from "./unpack.js";

const DIGEST = `sha256:${"0".repeat(64)}`;

describe("unpackLayer", () => {
  let dir: TempDir;
  let root: string;
  beforeEach(async () => {
    dir = await tempDir();
    root = dir.path;
  });
  afterEach(() => dir.remove());

  const apply = (entries: TarEntry[], gzip = true) =>
    unpackLayer(root, Readable.from([gzip ? gzipSync(tarArchive(entries)) : tarArchive(entries)]), {
      compression: gzip ? "gzip" : "none",
      digest: DIGEST,
    });

  const ls = async (path: string) => (await readdir(join(root, path))).sort();

  it("applies layers in order with whiteouts and opaque directories", async () => {
    await apply([
      { path: "etc/", type: "dir" },
      { path: "etc/keep", content: "k" },
      { path: "etc/gone", content: "g" },
      { path: "etc/sub/", type: "dir" },
      { path: "etc/sub/deep", content: "d" },
      { path: "opq/", type: "dir" },
      { path: "opq/old", content: "o" },
    ]);
    await apply([
      { path: "etc/.wh.gone" },
      { path: "etc/.wh.sub" },
      { path: "opq/new", content: "n" },
      { path: "opq/.wh..wh..opq" },
      { path: "etc/keep", content: "k2" },
    ]);
    expect(await ls("etc")).toEqual(["keep"]);
    expect(await readFile(join(root, "etc/keep"), "utf8")).toBe("k2");
    // The opaque marker hides what lower layers had, not what this layer wrote before it.
    expect(await ls("opq")).toEqual(["new"]);
  });

  it("keeps hardlinks, symlinks, modes (without setuid/setgid) and owners", async () => {
    await apply(
      [
        { path: "usr/bin/", type: "dir" },
        { path: "usr/bin/tool", content: "#!/bin/sh\n", mode: 0o4755, uid: 1000, gid: 1001 },
        { path: "usr/bin/tool2", type: "hardlink", linkpath: "usr/bin/tool" },
        { path: "bin", type: "symlink", linkpath: "usr/bin" },
        { path: "etc/alt", type: "symlink", linkpath: "/usr/bin/tool" },
        { path: "bin/viasymlink", content: "x" },
      ],
      false,
    );
    const tool = await stat(join(root, "usr/bin/tool"));
    // setuid is never applied on the host (unpack-hostile.test.ts).
    expect(tool.mode & 0o7777).toBe(0o755);
    expect([tool.uid, tool.gid]).toEqual([1000, 1001]);
    expect(tool.nlink).toBe(2);
    expect((await stat(join(root, "usr/bin/tool2"))).ino).toBe(tool.ino);
    expect(await readlink(join(root, "bin"))).toBe("usr/bin");
    expect(await readlink(join(root, "etc/alt"))).toBe("/usr/bin/tool");
    expect(await readFile(join(root, "usr/bin/viasymlink"), "utf8")).toBe("x");
  });

  it("replaces a file with a directory and a directory with a file", async () => {
    await apply([
      { path: "a", content: "file" },
      { path: "b/", type: "dir" },
      { path: "b/c", content: "c" },
    ]);
    await apply([
      { path: "a/", type: "dir" },
      { path: "a/x", content: "x" },
      { path: "b", content: "now a file" },
    ]);
    expect((await lstat(join(root, "a"))).isDirectory()).toBe(true);
    expect(await readFile(join(root, "b"), "utf8")).toBe("now a file");
  });

  it.each<[string, TarEntry[], string]>([
    [
      "../ traversal",
      [{ path: "../../etc/passwd", content: "root::0:0" }],
      "'../../etc/passwd' contains '..'",
    ],
    [
      "an absolute path",
      [{ path: "/etc/passwd", content: "x" }],
      "'/etc/passwd' is an absolute path",
    ],
    [
      "a hardlink out of the root",
      [{ path: "h", type: "hardlink", linkpath: "../../etc/passwd" }],
      "contains '..'",
    ],
    [
      "a write through an absolute symlink",
      [
        { path: "evil", type: "symlink", linkpath: "/etc" },
        { path: "evil/passwd", content: "x" },
      ],
      "'evil/passwd' is written through symlink 'evil' -> '/etc'",
    ],
    [
      "a write through a relative symlink that climbs out",
      [
        { path: "a/", type: "dir" },
        { path: "a/up", type: "symlink", linkpath: "../../.." },
        { path: "a/up/tmp/x", content: "x" },
      ],
      "'a/up/tmp/x' is written through symlink 'a/up' -> '../../..'",
    ],
  ])("refuses %s naming the entry", async (_what, entries, message) => {
    await expect(apply(entries)).rejects.toMatchObject({
      code: "IMAGE_LAYER_INVALID",
      message: expect.stringContaining(message) as unknown,
    });
    // Nothing of a refused entry is written inside the root either.
    expect(await ls(".")).not.toContain("passwd");
  });

  it("refuses a symlink escape planted by a lower layer", async () => {
    await apply([{ path: "lib", type: "symlink", linkpath: "../../../../tmp" }]);
    await expect(apply([{ path: "lib/pwned", content: "x" }])).rejects.toMatchObject({
      code: "IMAGE_LAYER_INVALID",
      message: expect.stringContaining("'lib/pwned'") as unknown,
    });
  });

  it("reports corrupt gzip and truncated tar data as IMAGE_LAYER_INVALID", async () => {
    const corrupt = gzipSync(tarArchive([{ path: "a", content: "x".repeat(5000) }]));
    corrupt.fill(7, 20, 60);
    await expect(
      unpackLayer(root, Readable.from([corrupt]), { compression: "gzip", digest: DIGEST }),
    ).rejects.toMatchObject({
      code: "IMAGE_LAYER_INVALID",
      message: expect.stringContaining("corrupt") as unknown,
    });
    await expect(
      unpackLayer(root, Readable.from([Buffer.from("not a tar at all".repeat(64))]), {
        compression: "none",
        digest: DIGEST,
      }),
    ).rejects.toMatchObject({ code: "IMAGE_LAYER_INVALID" });
  });

  it("refuses zstd layers with a clear message on Node without zstd", async () => {
    await writeFile(join(root, "x"), "");
    await expect(
      unpackLayer(root, Readable.from([Buffer.alloc(10)]), { compression: "zstd", digest: DIGEST }),
    ).rejects.toMatchObject({
      code: "IMAGE_LAYER_INVALID",
      message: expect.stringContaining("zstd layers unsupported") as unknown,
    });
  });
});
