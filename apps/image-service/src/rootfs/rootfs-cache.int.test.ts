import { readdir, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import type { Rootfs } from "@msb/proto";
import {
  pushRawImage,
  startRegistry,
  tarArchive,
  tempDir,
  type TempDir,
  type TestRegistry,
} from "@msb/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runOperation } from "../progress.js";
import { createImageService, type ImageService } from "../service.js";
import { mkfsErofsRunner, type MkfsRunner } from "./erofs.js";
import { isErofsFile } from "./prepare.js";

describe("rootfs files shared across MSB_HOMEs through the machine cache", () => {
  let registry: TestRegistry;
  let scratch: TempDir;
  let reference: string;
  let homes = 0;
  let mkfsRuns = 0;
  const real = mkfsErofsRunner();
  const counting: MkfsRunner = {
    identity: () => real.identity(),
    run: (source, out, signal) => {
      mkfsRuns += 1;
      return real.run(source, out, signal);
    },
  };

  /** A fresh MSB_HOME using `cacheDir` as MSB_CACHE_DIR. */
  async function home(cacheDir: string, rootfsCache = true): Promise<ImageService> {
    homes += 1;
    return createImageService({
      home: join(scratch.path, `home-${homes}`),
      cacheDir,
      rootfsCache,
      mkfs: counting,
      // The test registry is on loopback: contacted only because it is listed.
      registries: [registry.host],
      insecureRegistries: [],
      registryAuth: {},
    });
  }

  const prepare = (service: ImageService): Promise<Rootfs> =>
    runOperation(service.prepareRootfs({ reference, platform: "", pullIfMissing: true }));

  async function cacheEntries(cacheDir: string): Promise<string[]> {
    const names = await readdir(join(cacheDir, "rootfs")).catch(() => [] as string[]);
    return names.filter((n) => n.endsWith(".erofs")).sort();
  }

  beforeAll(async () => {
    registry = await startRegistry();
    scratch = await tempDir("msb-rootfs-cache-");
    const layer = gzipSync(
      tarArchive([
        { path: "etc/", type: "dir" },
        { path: "etc/hello", content: "hello from the shared rootfs" },
      ]),
    );
    await pushRawImage(registry.url, "test/shared", "v1", { layers: [{ data: layer }] });
    reference = `${registry.host}/test/shared:v1`;
  });

  afterAll(async () => {
    await registry?.stop();
    await scratch?.remove();
  });

  it("builds once, then a second home hard-links the cache entry without running mkfs; GC keeps the entry", async () => {
    const cacheDir = join(scratch.path, "cache-shared");
    const runs = mkfsRuns;
    const first = await prepare(await home(cacheDir));
    expect(first.cached).toBe(false);
    expect(mkfsRuns).toBe(runs + 1);
    const entries = await cacheEntries(cacheDir);
    const hex = first.image?.manifestDigest.slice("sha256:".length) ?? "";
    expect(entries).toEqual([expect.stringMatching(new RegExp(`^${hex}-[0-9a-f]{12}\\.erofs$`))]);
    const entry = join(cacheDir, "rootfs", entries[0] ?? "");
    expect(await isErofsFile(entry)).toBe(true);

    const secondHome = await home(cacheDir);
    const second = await prepare(secondHome);
    expect(second.cached).toBe(true);
    expect(mkfsRuns).toBe(runs + 1);
    expect(second.path).not.toBe(first.path);
    expect(second.sizeBytes).toBe(first.sizeBytes);
    const [a, b, c] = await Promise.all([stat(first.path), stat(second.path), stat(entry)]);
    expect(b.ino).toBe(c.ino);
    expect(a.ino).toBe(c.ino);

    // A second request in the same home is served by the home's own file.
    expect((await prepare(secondHome)).cached).toBe(true);

    await secondHome.remove(reference);
    await expect(stat(second.path)).rejects.toMatchObject({ code: "ENOENT" });
    expect(await isErofsFile(entry)).toBe(true);
    expect(await isErofsFile(first.path)).toBe(true);
  });

  it("deletes and rebuilds a cache entry that is not an erofs image", async () => {
    const cacheDir = join(scratch.path, "cache-corrupt");
    const built = await prepare(await home(cacheDir));
    const [name] = await cacheEntries(cacheDir);
    const entry = join(cacheDir, "rootfs", name ?? "");
    for (const bad of [Buffer.alloc(built.sizeBytes), Buffer.alloc(0)]) {
      // Replace (not overwrite) the entry, so the first home's link stays intact.
      await rm(entry);
      await writeFile(entry, bad);
      const runs = mkfsRuns;
      const rebuilt = await prepare(await home(cacheDir));
      expect(rebuilt.cached).toBe(false);
      expect(mkfsRuns).toBe(runs + 1);
      expect(await isErofsFile(rebuilt.path)).toBe(true);
      expect(await isErofsFile(entry)).toBe(true);
      expect((await stat(entry)).ino).toBe((await stat(rebuilt.path)).ino);
    }
  });

  it("builds once when two homes prepare the same image at the same time", async () => {
    const cacheDir = join(scratch.path, "cache-concurrent");
    const [h1, h2] = await Promise.all([home(cacheDir), home(cacheDir)]);
    const runs = mkfsRuns;
    const [r1, r2] = await Promise.all([prepare(h1), prepare(h2)]);
    expect(mkfsRuns).toBe(runs + 1);
    expect([r1.cached, r2.cached].sort()).toEqual([false, true]);
    expect((await stat(r1.path)).ino).toBe((await stat(r2.path)).ino);
    expect(await cacheEntries(cacheDir)).toHaveLength(1);
  });

  it("builds per home and writes no cache entry when MSB_ROOTFS_CACHE=0", async () => {
    const cacheDir = join(scratch.path, "cache-off");
    const runs = mkfsRuns;
    const r1 = await prepare(await home(cacheDir, false));
    const r2 = await prepare(await home(cacheDir, false));
    expect([r1.cached, r2.cached]).toEqual([false, false]);
    expect(mkfsRuns).toBe(runs + 2);
    expect((await stat(r1.path)).ino).not.toBe((await stat(r2.path)).ino);
    expect(await cacheEntries(cacheDir)).toEqual([]);
  });
});
