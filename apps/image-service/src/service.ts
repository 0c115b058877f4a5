import { join } from "node:path";
import type { CheckPullResponse, Image, PushResult, Rootfs } from "@msb/proto";
import { buildImage, type BuildRequest } from "./build/builder.js";
import type { Operation } from "./progress.js";
import { pullImage } from "./pull.js";
import { pushImage } from "./push.js";
import { formatReference, parseReference } from "./reference.js";
import { createRegistryClientFactory, type RegistryCredentials } from "./registry/client.js";
import type { HttpOptions } from "./registry/http.js";
import { createRegistryPolicy, DEFAULT_REGISTRIES } from "./registry/policy.js";
import type { MkfsRunner } from "./rootfs/erofs.js";
import { buildRootfs } from "./rootfs/prepare.js";
import { createBlobStore } from "./store/blob-store.js";
import { createImageCatalog, type ImageCatalog } from "./store/images.js";
import { createRefIndex } from "./store/refs.js";
import { MsbError } from "@msb/errors";

export interface ImageServiceOptions {
  /** `$MSB_HOME`; the store is `$MSB_HOME/images`. */
  readonly home: string;
  readonly cacheDir: string;
  /** `MSB_ROOTFS_CACHE`; default true: rootfs files are shared via `<cacheDir>/rootfs/`. */
  readonly rootfsCache?: boolean;
  /** Test seam: what runs mkfs.erofs. */
  readonly mkfs?: MkfsRunner;
  /** `MSB_REGISTRIES`; default {@link DEFAULT_REGISTRIES}. */
  readonly registries?: readonly string[];
  readonly insecureRegistries: readonly string[];
  /** `MSB_IMAGE_MAX_LAYER_BYTES` / `MSB_IMAGE_MAX_BYTES`: uncompressed unpack caps (4 / 8 GiB). */
  readonly maxLayerBytes?: number;
  readonly maxImageBytes?: number;
  /** Test seam: HTTP timeouts and DNS of the registry client. */
  readonly http?: HttpOptions;
  readonly registryAuth: Readonly<Record<string, RegistryCredentials>>;
  /** Host apt source files for mmdebstrap (tests may pin them); default: /etc/apt's. */
  readonly aptSources?: () => Promise<string[]>;
}

/** What the gRPC adapter and the CLI call: one method per RPC, long ones as Operations. */
export interface ImageService {
  readonly catalog: ImageCatalog;
  pull(reference: string, platform: string, signal?: AbortSignal): Operation<Image>;
  get(reference: string): Promise<Image>;
  list(): Promise<Image[]>;
  remove(reference: string, signal?: AbortSignal): Promise<string[]>;
  prepareRootfs(
    request: { reference: string; platform: string; pullIfMissing: boolean },
    signal?: AbortSignal,
  ): Operation<Rootfs>;
  build(request: BuildRequest, signal?: AbortSignal): Operation<Image>;
  push(reference: string, target: string, signal?: AbortSignal): Operation<PushResult>;
  /** Whether `reference` is local and whether its registry may be pulled from; no network. */
  checkPull(reference: string): Promise<CheckPullResponse>;
}

const GIB = 1024 * 1024 * 1024;

export async function createImageService(options: ImageServiceOptions): Promise<ImageService> {
  const store = await createBlobStore(join(options.home, "images"));
  const catalog = createImageCatalog(store, createRefIndex(store));
  const policy = createRegistryPolicy({
    registries: options.registries ?? DEFAULT_REGISTRIES,
    insecureRegistries: options.insecureRegistries,
  });
  const registries = createRegistryClientFactory({
    policy,
    credentials: options.registryAuth,
    ...(options.http ? { http: options.http } : {}),
  });
  const deps = {
    catalog,
    registries,
    limits: {
      maxLayerBytes: options.maxLayerBytes ?? 4 * GIB,
      maxImageBytes: options.maxImageBytes ?? 8 * GIB,
    },
    cacheDir: options.cacheDir,
    rootfsCache: options.rootfsCache ?? true,
    ...(options.mkfs ? { mkfs: options.mkfs } : {}),
    ...(options.aptSources ? { aptSources: options.aptSources } : {}),
  };
  return {
    catalog,
    pull: (reference, platform, signal) => pullImage(deps, reference, platform, signal),
    async get(reference) {
      return catalog.toProto(await catalog.get(reference));
    },
    async list() {
      return (await catalog.list()).map((i) => catalog.toProto(i));
    },
    async remove(reference, signal) {
      const key = formatReference(parseReference(reference));
      const existed = await catalog.refs.update((images) => {
        const had = key in images;
        delete images[key];
        return had;
      }, signal);
      if (!existed) {
        throw new MsbError(
          "IMAGE_NOT_FOUND",
          `No image ${key} in the local store, so nothing was removed. List local images with ListImages.`,
          { details: { reference: key } },
        );
      }
      return catalog.collectGarbage();
    },
    async *prepareRootfs(request, signal) {
      let image = await catalog.find(request.reference);
      if (image === undefined && request.pullIfMissing) {
        yield* pullImage(deps, request.reference, request.platform, signal);
        image = await catalog.get(request.reference);
      }
      if (image === undefined) image = await catalog.get(request.reference);
      return yield* buildRootfs(deps, image, signal);
    },
    build: (request, signal) => buildImage(deps, request, signal),
    push: (reference, target, signal) => pushImage(deps, reference, target, signal),
    async checkPull(reference) {
      const ref = parseReference(reference);
      return {
        reference: formatReference(ref),
        registry: ref.registry,
        present: (await catalog.find(reference)) !== undefined,
        registryAllowed: policy.isAllowed(ref.registry),
      };
    },
  };
}
