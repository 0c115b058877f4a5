import { spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream, createWriteStream } from "node:fs";
import { chmod, mkdir, readFile, readdir, rename, rm, stat, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { Transform } from "node:stream";
import { pipeline } from "node:stream/promises";
import { createGzip } from "node:zlib";
import { MsbError } from "@msb/errors";
import type { Image, Progress } from "@msb/proto";
import { create as createTar } from "tar";
import { progress, runOperation, withProgress, type Operation } from "../progress.js";
import { pullImage, type PullDeps } from "../pull.js";
import { formatReference, parseReference } from "../reference.js";
import { MEDIA_TYPES, imageManifestSchema, type Descriptor } from "../registry/manifest.js";
import { acquireFileLock, writeFileAtomic } from "../store/fs-util.js";
import { loadDefinition, type ImageDefinition, type LoadedDefinition } from "./definition.js";

/** Bump when the builder's output for the same definition changes. */
const BUILDER_VERSION = 1;
const DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const OCI_LAYOUT = '{"imageLayoutVersion":"1.0.0"}';

export interface BuildDeps extends PullDeps {
  /** `${MSB_CACHE_DIR}`; builds go to `image-builds/<hash>/` (an OCI image layout). */
  readonly cacheDir: string;
  /** Host apt source files handed to mmdebstrap; default: the enabled ones under /etc/apt. */
  readonly aptSources?: () => Promise<string[]>;
}

export interface BuildRequest {
  readonly definitionDir: string;
  readonly tag?: string;
  readonly noCache?: boolean;
}

/** The enabled apt source files of this host (`sources.list`, `sources.list.d/*.{list,sources}`). */
export async function hostAptSources(etcApt = "/etc/apt"): Promise<string[]> {
  const files: string[] = [];
  const main = join(etcApt, "sources.list");
  const mainText = await readFile(main, "utf8").catch(() => "");
  if (/^\s*deb\s/m.test(mainText)) files.push(main);
  const dir = join(etcApt, "sources.list.d");
  for (const name of (await readdir(dir).catch(() => [] as string[])).sort()) {
    if (name.endsWith(".list") || name.endsWith(".sources")) files.push(join(dir, name));
  }
  return files;
}

interface BuildPlan {
  readonly loaded: LoadedDefinition;
  readonly hash: string;
  readonly sources: string[];
  readonly files: { abs: string; dest: string; mode: number }[];
}

async function plan(
  loaded: LoadedDefinition,
  sourcesOf: () => Promise<string[]>,
): Promise<BuildPlan> {
  const d = loaded.definition;
  const h = createHash("sha256");
  h.update(JSON.stringify({ builder: BUILDER_VERSION, arch: process.arch, definition: d }));
  const files = [];
  for (const f of d.files) {
    const abs = resolve(loaded.dir, f.src);
    const content = await readFile(abs).catch((err: NodeJS.ErrnoException) => {
      throw new MsbError(
        "IMAGE_DEFINITION_INVALID",
        `${loaded.file}: files.src '${f.src}' cannot be read (${err.code ?? err.message}). Add the file or fix the path.`,
        { details: { file: loaded.file, src: f.src } },
      );
    });
    h.update(`\0file\0${f.dest}\0${f.mode}\0`).update(content);
    files.push({ abs, dest: f.dest, mode: parseInt(f.mode, 8) });
  }
  const sources = "debian" in d.base ? await sourcesOf() : [];
  if ("debian" in d.base && sources.length === 0) {
    throw new MsbError(
      "IMAGE_BUILD_FAILED",
      "This host has no apt sources (/etc/apt/sources.list or sources.list.d/*.sources); mmdebstrap builds from the host's Debian sources. Configure apt first.",
    );
  }
  // The sources pin the archive (a snapshot date, a mirror): a change means other packages.
  for (const s of sources) h.update(`\0src\0${s}\0`).update(await readFile(s));
  return { loaded, hash: h.digest("hex"), sources, files };
}

/** A stream tap that hashes what passes and counts bytes. */
function hashTap(): { stream: Transform; digest: () => string; size: () => number } {
  const h = createHash("sha256");
  let n = 0;
  const stream = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      h.update(chunk);
      n += chunk.length;
      cb(null, chunk);
    },
  });
  return { stream, digest: () => `sha256:${h.digest("hex")}`, size: () => n };
}

async function writeBlob(
  layoutDir: string,
  bytes: Buffer,
): Promise<Descriptor & { bytes: Buffer }> {
  const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
  await writeFile(join(layoutDir, "blobs/sha256", digest.slice(7)), bytes);
  return { mediaType: "", digest, size: bytes.length, bytes };
}

/** Compresses a tar file into a gzip layer blob of the layout; returns digest and diff id. */
async function gzipLayer(
  layoutDir: string,
  tarPath: string,
): Promise<{ layer: Descriptor; diffId: string }> {
  const tmp = join(layoutDir, `layer.${randomBytes(4).toString("hex")}.tmp`);
  const diff = hashTap();
  const compressed = hashTap();
  await pipeline(
    createReadStream(tarPath),
    diff.stream,
    createGzip({ level: 6 }),
    compressed.stream,
    createWriteStream(tmp),
  );
  const digest = compressed.digest();
  await rename(tmp, join(layoutDir, "blobs/sha256", digest.slice(7)));
  return {
    layer: { mediaType: MEDIA_TYPES.ociLayerGzip, digest, size: compressed.size() },
    diffId: diff.digest(),
  };
}

function runLogged(
  command: string,
  args: string[],
  emit: (p: Progress) => void,
  logPath: string,
  signal: AbortSignal | undefined,
): Promise<void> {
  return new Promise((resolvePromise, reject) => {
    const log = createWriteStream(logPath, { flags: "a" });
    const child = spawn(command, args, {
      stdio: ["ignore", "pipe", "pipe"],
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive", LC_ALL: "C.UTF-8" },
      ...(signal ? { signal } : {}),
    });
    let pending = "";
    const onData = (d: Buffer): void => {
      log.write(d);
      pending += d.toString();
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines)
        if (line.trim() !== "") emit(progress({ phase: "building", message: line }));
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("error", (err) => {
      log.end();
      reject(
        signal?.aborted === true
          ? (signal.reason as Error)
          : new MsbError(
              "IMAGE_BUILD_FAILED",
              `${command} could not be started (${err.message}). Install it (tools/setup.sh does).`,
              { cause: err },
            ),
      );
    });
    child.once("close", (code) => {
      log.end();
      if (code === 0) resolvePromise();
      else
        reject(
          new MsbError(
            "IMAGE_BUILD_FAILED",
            `${command} exited with ${code}. The build log is ${logPath}; its last lines are in this build's progress messages.`,
            { details: { exitCode: code, log: logPath } },
          ),
        );
    });
  });
}

/**
 * Builds an image from a definition into an OCI layout under the build cache, keyed by a hash
 * of the definition, its files, the builder version and the host's apt sources; then imports
 * it into the store under its normalised name. A cached build is only imported.
 */
export async function* buildImage(
  deps: BuildDeps,
  request: BuildRequest,
  signal?: AbortSignal,
): Operation<Image> {
  const loaded = await loadDefinition(request.definitionDir);
  const d = loaded.definition;
  const name = request.tag !== undefined && request.tag !== "" ? request.tag : `${d.name}:${d.tag}`;
  const key = formatReference(parseReference(name));
  const p = await plan(loaded, deps.aptSources ?? (() => hostAptSources()));
  const buildsDir = join(deps.cacheDir, "image-builds");
  const layoutDir = join(buildsDir, p.hash);
  await mkdir(buildsDir, { recursive: true });
  yield progress({
    phase: "resolving",
    message: `${loaded.file} → ${key} (build ${p.hash.slice(0, 12)})`,
  });

  const release = await acquireFileLock(
    join(buildsDir, `${p.hash}.lock`),
    signal,
    `building ${key}`,
  );
  try {
    const cached = await stat(join(layoutDir, "index.json")).catch(() => undefined);
    if (cached !== undefined && request.noCache === true)
      await rm(layoutDir, { recursive: true, force: true });
    if (cached === undefined || request.noCache === true) {
      const work = join(buildsDir, `.tmp-${p.hash.slice(0, 16)}-${randomBytes(4).toString("hex")}`);
      try {
        const started = Date.now();
        yield* withProgress((emit) => buildLayout(deps, p, work, emit, signal));
        await rename(work, layoutDir);
        yield progress({
          phase: "built",
          message: `built ${key} in ${((Date.now() - started) / 1000).toFixed(1)} s`,
        });
      } finally {
        await rm(work, { recursive: true, force: true });
      }
    } else {
      yield progress({ phase: "cached", message: `using cached build ${layoutDir}` });
    }
  } finally {
    await release();
  }
  return yield* importLayout(deps, layoutDir, key, signal);
}

async function buildLayout(
  deps: BuildDeps,
  p: BuildPlan,
  work: string,
  emit: (p: Progress) => void,
  signal: AbortSignal | undefined,
): Promise<void> {
  const d: ImageDefinition = p.loaded.definition;
  await mkdir(join(work, "blobs/sha256"), { recursive: true });
  // Files and the working directory, laid out as they go into the image.
  const staging = join(work, "staging");
  await mkdir(staging, { mode: 0o755 });
  for (const f of p.files) {
    const dest = join(staging, f.dest);
    await mkdir(join(dest, ".."), { recursive: true, mode: 0o755 });
    await writeFile(dest, await readFile(f.abs));
    await chmod(dest, f.mode);
  }
  if (d.workdir !== "/") await mkdir(join(staging, d.workdir), { recursive: true, mode: 0o755 });

  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  let baseConfig: Record<string, unknown> = {};
  if ("debian" in d.base) {
    const tarPath = join(work, "rootfs.tar");
    const packagesPath = join(work, "packages.txt");
    const args = [
      `--variant=${d.base.variant}`,
      "--format=tar",
      "--dpkgopt=path-exclude=/usr/share/doc/*",
      "--dpkgopt=path-include=/usr/share/doc/*/copyright",
      "--dpkgopt=path-exclude=/usr/share/man/*",
      "--dpkgopt=path-exclude=/usr/share/locale/*",
      "--dpkgopt=path-exclude=/usr/share/info/*",
      ...(d.packages.length > 0 ? [`--include=${d.packages.join(",")}`] : []),
      `--customize-hook=sync-in ${staging} /`,
      `--customize-hook=chroot "$1" dpkg-query -W -f='\${Package} \${Version}\\n' > ${packagesPath}`,
      '--customize-hook=rm -f "$1"/etc/hostname "$1"/etc/resolv.conf',
      d.base.debian,
      tarPath,
      // No mirror is named here: mmdebstrap pastes these host files into the image's sources.
      ...p.sources,
    ];
    emit(
      progress({
        phase: "building",
        message: `mmdebstrap ${d.base.debian} (${d.packages.length} packages)`,
      }),
    );
    await runLogged("mmdebstrap", args, emit, join(work, "build.log"), signal);
    emit(progress({ phase: "compressing", message: "compressing the layer (gzip)" }));
    const { layer, diffId } = await gzipLayer(work, tarPath);
    await rm(tarPath, { force: true });
    layers.push(layer);
    diffIds.push(diffId);
  } else {
    const baseRef = d.base.image;
    const image = await runOperation(pullImage(deps, baseRef, "linux/amd64", signal), emit);
    const base = await deps.catalog.get(image.reference);
    for (const [i, layer] of base.manifest.layers.entries()) {
      await pipeline(
        createReadStream(deps.catalog.store.blobPath(layer.digest)),
        createWriteStream(join(work, "blobs/sha256", layer.digest.slice(7))),
      );
      layers.push(layer);
      diffIds.push(base.config.rootfs?.diff_ids[i] ?? layer.digest);
    }
    baseConfig = JSON.parse(
      (await deps.catalog.store.read(base.manifest.config.digest)).toString("utf8"),
    ) as Record<string, unknown>;
    const tarPath = join(work, "files.tar");
    await createTar(
      { cwd: staging, file: tarPath, portable: false, preservePaths: false },
      await readdir(staging),
    );
    const { layer, diffId } = await gzipLayer(work, tarPath);
    await rm(tarPath, { force: true });
    layers.push(layer);
    diffIds.push(diffId);
  }

  const packages = await readFile(join(work, "packages.txt"), "utf8").catch(() => "");
  const baseRuntime = (baseConfig["config"] ?? {}) as {
    Env?: string[];
    Labels?: Record<string, string>;
  };
  const env = new Map<string, string>();
  for (const e of [DEFAULT_PATH, ...(baseRuntime.Env ?? [])]) env.set(e.split("=")[0] ?? e, e);
  for (const [k, v] of Object.entries(d.env)) env.set(k, `${k}=${v}`);
  const config = {
    ...baseConfig,
    created: new Date().toISOString(),
    architecture: process.arch === "arm64" ? "arm64" : "amd64",
    os: "linux",
    config: {
      ...baseRuntime,
      Env: [...env.values()],
      ...(d.entrypoint.length > 0 ? { Entrypoint: d.entrypoint } : {}),
      ...(d.cmd.length > 0 ? { Cmd: d.cmd } : {}),
      WorkingDir: d.workdir,
      Labels: {
        ...(baseRuntime.Labels ?? {}),
        ...d.labels,
        "org.opencontainers.image.title": d.name,
        ...(d.description === undefined
          ? {}
          : { "org.opencontainers.image.description": d.description }),
        "dev.msb.build.hash": p.hash,
        ...(packages === ""
          ? {}
          : { "dev.msb.build.packages": String(packages.trim().split("\n").length) }),
      },
    },
    rootfs: { type: "layers", diff_ids: diffIds },
    history: [
      {
        created: new Date().toISOString(),
        created_by: `msb image builder v${BUILDER_VERSION}: ${p.loaded.file}`,
      },
    ],
  };
  const configBlob = await writeBlob(work, Buffer.from(JSON.stringify(config)));
  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.ociManifest,
    config: { mediaType: MEDIA_TYPES.ociConfig, digest: configBlob.digest, size: configBlob.size },
    layers,
  };
  const manifestBlob = await writeBlob(work, Buffer.from(JSON.stringify(manifest)));
  await writeFile(join(work, "oci-layout"), OCI_LAYOUT);
  await rm(staging, { recursive: true, force: true });
  // index.json last: its presence marks a complete layout.
  await writeFileAtomic(
    join(work, "index.json"),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MEDIA_TYPES.ociIndex,
      manifests: [
        {
          mediaType: MEDIA_TYPES.ociManifest,
          digest: manifestBlob.digest,
          size: manifestBlob.size,
          annotations: { "org.opencontainers.image.ref.name": `${d.name}:${d.tag}` },
        },
      ],
    }),
  );
}

/** Copies an OCI layout's image into the store (verifying every blob) and names it `key`. */
export async function* importLayout(
  deps: BuildDeps,
  layoutDir: string,
  key: string,
  signal?: AbortSignal,
): Operation<Image> {
  const index = JSON.parse(await readFile(join(layoutDir, "index.json"), "utf8")) as {
    manifests: { digest: string }[];
  };
  const manifestDigest = index.manifests[0]?.digest;
  if (manifestDigest === undefined) {
    throw new MsbError(
      "IMAGE_BUILD_FAILED",
      `The build cache ${layoutDir} has an empty index.json. Rebuild with no_cache.`,
    );
  }
  const blobFile = (digest: string): string => join(layoutDir, "blobs/sha256", digest.slice(7));
  const manifestBytes = await readFile(blobFile(manifestDigest));
  const manifest = imageManifestSchema.parse(JSON.parse(manifestBytes.toString("utf8")));
  const blobs = [manifest.config, ...manifest.layers];
  const digests = [manifestDigest, ...blobs.map((b) => b.digest)];
  return yield* withProgress((emit) =>
    deps.catalog.pinned(digests, async () => {
      let doneItems = 0;
      for (const blob of blobs) {
        await deps.catalog.store.ensure(
          blob.digest,
          blob.size,
          () =>
            Promise.resolve({ resumed: false, stream: createReadStream(blobFile(blob.digest)) }),
          signal ? { signal } : {},
        );
        doneItems += 1;
        emit(
          progress({
            phase: "importing",
            digest: blob.digest,
            currentBytes: blob.size,
            currentTotalBytes: blob.size,
            doneItems,
            totalItems: blobs.length,
          }),
        );
      }
      await deps.catalog.store.put(manifestBytes, manifestDigest);
      await deps.catalog.refs.update((images) => {
        images[key] = {
          manifestDigest,
          platform: `linux/${process.arch === "arm64" ? "arm64" : "amd64"}`,
          storedUnixMs: Date.now(),
        };
      }, signal);
      emit(progress({ phase: "done", message: `stored ${key} (${manifestDigest})` }));
      return deps.catalog.toProto(await deps.catalog.get(key));
    }),
  );
}
