import { execFile } from "node:child_process";
import { readFile, readdir, stat, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { gzipSync } from "node:zlib";
import { MsbError } from "@msb/errors";
import {
  ImageServiceService,
  createTypedClient,
  type TypedClient,
  type Image,
  type Progress,
  type PushResult,
  type Rootfs,
} from "@msb/proto";
import { createLogger } from "@msb/runtime";
import {
  freePort,
  pushRawImage,
  startRegistry,
  tarArchive,
  tempDir,
  type TempDir,
  type TestRegistry,
} from "@msb/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startGrpcServer, type RunningServer } from "./server.js";
import { createImageService } from "./service.js";

const execFileAsync = promisify(execFile);
const repoRoot = fileURLToPath(new URL("../../../", import.meta.url));
const SERVICE = "image service";

type Event<R> = { $case: "progress"; value: Progress } | { $case: string; value: R } | undefined;

/** Reads a progress stream; returns the progress events and the final (non-progress) message. */
async function drain<R>(stream: AsyncIterable<{ event: Event<R> }>) {
  const events: Progress[] = [];
  let result: R | undefined;
  for await (const message of stream) {
    const event = message.event;
    if (event === undefined) continue;
    if (event.$case === "progress") events.push(event.value as Progress);
    else result = event.value as R;
  }
  if (result === undefined) throw new Error("stream ended without a result");
  return { events, result };
}

async function expectError(
  promise: Promise<unknown>,
  code: string,
  text: string,
): Promise<MsbError> {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(MsbError);
  const e = err as MsbError;
  expect(e.code, e.message).toBe(code);
  expect(e.message).toContain(text);
  return e;
}

describe("image service over gRPC against a real registry", () => {
  let registry: TestRegistry;
  let home: TempDir;
  let server: RunningServer;
  let client: TypedClient<typeof ImageServiceService>;
  const store = () => join(home.path, "images");

  const pull = (reference: string) => drain<Image>(client.pullImage({ reference, platform: "" }));
  const rootfs = (reference: string, pullIfMissing = true) =>
    drain<Rootfs>(client.prepareRootfs({ reference, platform: "", pullIfMissing }));
  const getImage = (reference: string) => client.getImage({ reference }, { timeoutMs: 30_000 });

  /** What must not change when an operation fails: names, finished rootfs files, temp files. */
  async function storeState() {
    return {
      refs: await readFile(join(store(), "refs.json"), "utf8").catch(() => ""),
      rootfs: (await readdir(join(store(), "rootfs")).catch(() => [])).sort(),
      tmp: (await readdir(join(store(), "tmp"))).sort(),
    };
  }

  async function extract(path: string): Promise<TempDir> {
    const dir = await tempDir("msb-rootfs-");
    await execFileAsync("fsck.erofs", [`--extract=${join(dir.path, "root")}`, path]);
    return dir;
  }

  beforeAll(async () => {
    registry = await startRegistry();
    home = await tempDir("msb-home-");
    const service = await createImageService({
      home: home.path,
      cacheDir: process.env["MSB_CACHE_DIR"] ?? join(homedir(), ".cache", "msb"),
      // Per-home rootfs builds (`cached: false` first); sharing: rootfs/rootfs-cache.int.test.ts.
      rootfsCache: false,
      // The test registry is on loopback: contacted only because it is listed.
      registries: [registry.host],
      insecureRegistries: [],
      registryAuth: {},
    });
    const logger = createLogger({ name: "image-service-test", level: "silent" });
    server = await startGrpcServer(
      `unix:${join(home.path, "run", "image-service.sock")}`,
      service,
      logger,
    );
    // Streams (builds, pulls) may take minutes on this machine; unary calls set 30 s.
    client = createTypedClient(ImageServiceService, server.address, {
      service: SERVICE,
      defaultTimeoutMs: 900_000,
    });
  });

  afterAll(async () => {
    client?.close();
    await server?.stop(AbortSignal.timeout(5_000));
    await registry?.stop();
    await home?.remove();
  });

  it("builds microsandbox/python, pushes it, pulls it back and prepares a rootfs that runs python3", async () => {
    const built = await drain<Image>(
      client.buildImage({
        definitionDir: join(repoRoot, "images/python"),
        tag: "",
        noCache: false,
      }),
    );
    expect(built.result.reference).toBe("docker.io/microsandbox/python:latest");
    expect(built.result.config?.env).toContain("PYTHONUNBUFFERED=1");
    expect(built.result.config?.workingDir).toBe("/workspace");

    const target = `${registry.host}/microsandbox/python:latest`;
    const pushed = await drain<PushResult>(
      client.pushImage({ reference: "microsandbox/python", target }),
    );
    expect(pushed.result).toEqual({ target, manifestDigest: built.result.manifestDigest });

    const removed = await client.removeImage(
      { reference: "microsandbox/python" },
      { timeoutMs: 30_000 },
    );
    expect(removed.removedDigests).toEqual(
      expect.arrayContaining(built.result.layers.map((l) => l.digest)),
    );
    await expectError(getImage("microsandbox/python"), "IMAGE_NOT_FOUND", "Pull it");

    const started = Date.now();
    const pulled = await pull(`${registry.host}/microsandbox/python`);
    const seconds = (Date.now() - started) / 1000;
    expect(pulled.result.manifestDigest).toBe(built.result.manifestDigest);
    expect(pulled.result.reference).toBe(target);
    const downloading = pulled.events.filter((e) => e.phase === "downloading");
    expect(downloading.length).toBeGreaterThan(0);
    expect(pulled.events.at(-1)).toMatchObject({
      phase: "done",
      doneBytes: pulled.events.at(-1)?.totalBytes,
    });
    const bytes = pulled.result.compressedSizeBytes;
    console.log(
      `pull from loopback registry: ${(bytes / 1048576).toFixed(1)} MiB in ${seconds.toFixed(2)} s = ${(bytes / 1048576 / seconds).toFixed(1)} MiB/s`,
    );

    const first = await rootfs(target, false);
    expect(first.result.cached).toBe(false);
    expect(first.result.format).toBe("erofs");
    expect(first.result.path).toBe(
      join(store(), "rootfs", `${pulled.result.manifestDigest.slice(7)}.erofs`),
    );
    expect((await stat(first.result.path)).size).toBe(first.result.sizeBytes);
    console.log(
      `python rootfs: ${(first.result.sizeBytes / 1048576).toFixed(1)} MiB erofs, compressed image ${(bytes / 1048576).toFixed(1)} MiB`,
    );
    const again = await rootfs(target, false);
    expect(again.result).toMatchObject({ cached: true, path: first.result.path });
    expect(await storeState()).toMatchObject({ tmp: [] });

    const dir = await extract(first.result.path);
    try {
      const root = join(dir.path, "root");
      const { stdout } = await execFileAsync("chroot", [
        root,
        "/usr/bin/python3",
        "-c",
        "print(5*5)",
      ]);
      expect(stdout.trim()).toBe("25");
      expect((await stat(join(root, "workspace"))).isDirectory()).toBe(true);
    } finally {
      await dir.remove();
    }
  });

  it("applies an upper layer's whiteouts to the lower layer in the rootfs", async () => {
    const lower = gzipSync(
      tarArchive([
        { path: "etc/", type: "dir" },
        { path: "etc/keep", content: "keep" },
        { path: "etc/deleted", content: "lower" },
        { path: "data/", type: "dir" },
        { path: "data/old", content: "old" },
      ]),
    );
    const upper = gzipSync(
      tarArchive([
        { path: "etc/.wh.deleted" },
        { path: "data/.wh..wh..opq" },
        { path: "data/new", content: "new" },
        { path: "etc/keep", content: "upper" },
      ]),
    );
    await pushRawImage(registry.url, "test/whiteout", "v1", {
      layers: [{ data: lower }, { data: upper }],
    });
    const { result } = await rootfs(`${registry.host}/test/whiteout:v1`);
    const dir = await extract(result.path);
    try {
      const root = join(dir.path, "root");
      expect((await readdir(join(root, "etc"))).sort()).toEqual(["keep"]);
      expect(await readFile(join(root, "etc/keep"), "utf8")).toBe("upper");
      expect(await readdir(join(root, "data"))).toEqual(["new"]);
    } finally {
      await dir.remove();
    }
  });

  it("CheckPull says whether an image is local and whether its registry is allowed", async () => {
    const check = (reference: string) => client.checkPull({ reference }, { timeoutMs: 30_000 });
    const layer = gzipSync(tarArchive([{ path: "etc/checked", content: "x" }]));
    await pushRawImage(registry.url, "test/checked", "v1", { layers: [{ data: layer }] });
    const ref = `${registry.host}/test/checked:v1`;
    expect(await check(ref)).toEqual({
      reference: ref,
      registry: registry.host,
      present: false,
      registryAllowed: true,
    });
    await pull(ref);
    expect(await check(ref)).toMatchObject({ present: true, registryAllowed: true });
    expect(await check("127.0.0.1:1/x/y")).toMatchObject({
      reference: "127.0.0.1:1/x/y:latest",
      present: false,
      registryAllowed: false,
    });
    expect(await check("python:3.12")).toMatchObject({
      reference: "docker.io/library/python:3.12",
      registryAllowed: false,
    });
    await expectError(check("Not/Valid"), "IMAGE_REFERENCE_INVALID", "name[:tag]");
  });

  describe("bad input gets a typed error and leaves the store as it was", () => {
    it("unknown images", async () => {
      const before = await storeState();
      await expectError(
        pull(`${registry.host}/nobody/missing:1`),
        "IMAGE_NOT_FOUND",
        "Check the name and tag",
      );
      await expectError(
        getImage("never/pulled"),
        "IMAGE_NOT_FOUND",
        "No image docker.io/never/pulled:latest",
      );
      await expectError(rootfs("never/pulled", false), "IMAGE_NOT_FOUND", "Pull it");
      expect(await storeState()).toEqual(before);
    });

    it("an invalid reference", async () => {
      await expectError(pull("Not/Valid"), "IMAGE_REFERENCE_INVALID", "name[:tag]");
    });

    it("a registry that is not listed in MSB_REGISTRIES", async () => {
      const before = await storeState();
      const port = await freePort();
      await expectError(pull(`127.0.0.1:${port}/some/image`), "POLICY_DENIED", "MSB_REGISTRIES");
      expect(await storeState()).toEqual(before);
    });

    it("a blob whose content does not match its digest", async () => {
      const layer = gzipSync(tarArchive([{ path: "hello", content: "hello world" }]));
      const pushed = await pushRawImage(registry.url, "test/baddigest", "v1", {
        layers: [{ data: layer }],
      });
      const layerDigest = pushed.layerDigests[0]!;
      const tampered = Buffer.from(layer);
      tampered[tampered.length - 5] = (tampered[tampered.length - 5]! + 1) % 256;
      await writeFile(registry.blobDataPath(layerDigest), tampered);
      const before = await storeState();
      await expectError(
        pull(`${registry.host}/test/baddigest:v1`),
        "IMAGE_DIGEST_MISMATCH",
        layerDigest,
      );
      expect(await storeState()).toEqual(before);
      await expect(stat(join(store(), "blobs/sha256", layerDigest.slice(7)))).rejects.toThrow();
    });

    it("a corrupt gzip layer", async () => {
      const corrupt = gzipSync(tarArchive([{ path: "f", content: "x".repeat(10_000) }]));
      corrupt.fill(0x55, 12, 40);
      await pushRawImage(registry.url, "test/corrupt", "v1", { layers: [{ data: corrupt }] });
      const before = await storeState();
      await expectError(
        rootfs(`${registry.host}/test/corrupt:v1`),
        "IMAGE_LAYER_INVALID",
        "corrupt",
      );
      const after = await storeState();
      expect({ rootfs: after.rootfs, tmp: after.tmp }).toEqual({
        rootfs: before.rootfs,
        tmp: before.tmp,
      });
    });

    it("a layer that writes ../../etc/passwd", async () => {
      const passwd = await readFile("/etc/passwd", "utf8");
      const evil = gzipSync(
        tarArchive([
          { path: "ok", content: "fine" },
          { path: "../../etc/passwd", content: "pwned::0:0::/:/bin/sh\n" },
        ]),
      );
      await pushRawImage(registry.url, "test/traversal", "v1", { layers: [{ data: evil }] });
      const before = await storeState();
      await expectError(
        rootfs(`${registry.host}/test/traversal:v1`),
        "IMAGE_LAYER_INVALID",
        "'../../etc/passwd'",
      );
      const after = await storeState();
      expect({ rootfs: after.rootfs, tmp: after.tmp }).toEqual({
        rootfs: before.rootfs,
        tmp: before.tmp,
      });
      expect(await readFile("/etc/passwd", "utf8")).toBe(passwd);
    });

    it("a definition with an unknown key", async () => {
      const dir = await tempDir("msb-def-");
      try {
        await writeFile(
          join(dir.path, "image.yaml"),
          "name: test/bad\nbase:\n  debian: bookworm\npakages: [curl]\n",
        );
        const before = await storeState();
        const err = await expectError(
          drain(client.buildImage({ definitionDir: dir.path, tag: "", noCache: false })),
          "IMAGE_DEFINITION_INVALID",
          "unknown key 'pakages'",
        );
        expect(err.message).toContain("image.yaml");
        expect(err.message).toContain("docs/images.md");
        expect(await storeState()).toEqual(before);
      } finally {
        await dir.remove();
      }
    });
  });
});
