import { isAbsolute } from "node:path";
import { MsbError } from "@msb/errors";
import { ALL_NAMESPACES } from "@msb/keys";
import type { Caller } from "../auth/caller.js";
import type { ImageProgress, ImageStoreBackend, StoredImage } from "./backend.js";
import type { BuildParams, PullParams, PushParams, RemoveParams } from "./schemas.js";

/** Receives the progress of a pull, build or push (an SSE answer, docs/streaming.md). */
export type ProgressObserver = (progress: ProgressEvent) => void;

/** A progress event as the API sends it (`progress` SSE events, docs/api.md). */
export interface ProgressEvent {
  readonly phase: string;
  readonly digest: string;
  readonly current_bytes: number;
  readonly current_total_bytes: number;
  readonly done_bytes: number;
  readonly total_bytes: number;
  readonly done_items: number;
  readonly total_items: number;
  readonly message: string;
}

/** An image as `image.pull` / `image.build` answer it. */
export interface ImageSummary {
  readonly reference: string;
  readonly digest: string;
  readonly platform: string;
  readonly size_bytes: number;
  /** ISO 8601, or null when the store does not know. */
  readonly stored_at: string | null;
  readonly layers: readonly { readonly digest: string; readonly size_bytes: number }[];
}

export interface ImageListEntry {
  readonly reference: string;
  readonly digest: string;
  readonly size_bytes: number;
  readonly stored_at: string | null;
}

export interface ImageService {
  pull(
    caller: Caller,
    params: PullParams,
    signal: AbortSignal,
    observer?: ProgressObserver,
  ): Promise<ImageSummary>;
  list(caller: Caller, signal: AbortSignal): Promise<{ images: ImageListEntry[] }>;
  remove(
    caller: Caller,
    params: RemoveParams,
    signal: AbortSignal,
  ): Promise<{ reference: string; removed_digests: string[] }>;
  build(
    caller: Caller,
    params: BuildParams,
    signal: AbortSignal,
    observer?: ProgressObserver,
  ): Promise<ImageSummary>;
  push(
    caller: Caller,
    params: PushParams,
    signal: AbortSignal,
    observer?: ProgressObserver,
  ): Promise<{ reference: string; target: string; digest: string }>;
}

export interface ImageServiceDeps {
  readonly store: ImageStoreBackend;
}

/**
 * The host-wide image store behind the `image.*` JSON-RPC methods. Images are shared by every
 * namespace, so every method needs an all-namespaces caller (a `*` key, or `--dev`); a
 * namespace-bound key gets AUTH_FORBIDDEN. `image.build` reads a directory on the server host,
 * which is one more reason it stays with `*` callers.
 */
export function createImageService(deps: ImageServiceDeps): ImageService {
  const { store } = deps;
  const emit = (observer: ProgressObserver | undefined) => (p: ImageProgress) =>
    observer?.(toProgressEvent(p));
  return {
    async pull(caller, params, signal, observer) {
      assertHostWide(caller, "image.pull");
      return summary(await store.pull(params.reference, params.platform ?? "", signal, emit(observer)));
    },
    async list(caller, signal) {
      assertHostWide(caller, "image.list");
      const images = await store.list(signal);
      return {
        images: images
          .map((i) => ({
            reference: i.reference,
            digest: i.manifestDigest,
            size_bytes: i.sizeBytes,
            stored_at: storedAt(i),
          }))
          .sort((a, b) => a.reference.localeCompare(b.reference)),
      };
    },
    async remove(caller, params, signal) {
      assertHostWide(caller, "image.remove");
      const r = await store.remove(params.reference, signal);
      return { reference: params.reference, removed_digests: r.removedDigests };
    },
    async build(caller, params, signal, observer) {
      assertHostWide(caller, "image.build");
      if (!isAbsolute(params.definition_dir)) {
        throw new MsbError(
          "INVALID_PARAMS",
          `definition_dir '${params.definition_dir}' is relative; send the absolute path of the images/<name> directory on the server host (\`msb build\` does this for you).`,
          { details: { issues: [{ field: "definition_dir", message: "must be absolute" }] } },
        );
      }
      const image = await store.build(
        {
          definitionDir: params.definition_dir,
          tag: params.tag ?? "",
          noCache: params.no_cache === true,
        },
        signal,
        emit(observer),
      );
      return summary(image);
    },
    async push(caller, params, signal, observer) {
      assertHostWide(caller, "image.push");
      const r = await store.push(params.reference, params.target ?? "", signal, emit(observer));
      return { reference: params.reference, target: r.target, digest: r.manifestDigest };
    },
  };
}

function assertHostWide(caller: Caller, method: string): void {
  if (caller.scope === ALL_NAMESPACES) return;
  throw new MsbError(
    "AUTH_FORBIDDEN",
    `${method} manages the server's image store, which every namespace shares; this API key is bound to namespace '${caller.scope}'. Use an all-namespaces key (\`msb server keygen\` without --namespace).`,
    { details: { method, keyNamespace: caller.scope } },
  );
}

function storedAt(image: StoredImage): string | null {
  return image.storedUnixMs > 0 ? new Date(image.storedUnixMs).toISOString() : null;
}

function summary(image: StoredImage): ImageSummary {
  return {
    reference: image.reference,
    digest: image.manifestDigest,
    platform: image.platform,
    size_bytes: image.sizeBytes,
    stored_at: storedAt(image),
    layers: image.layers.map((l) => ({ digest: l.digest, size_bytes: l.sizeBytes })),
  };
}

function toProgressEvent(p: ImageProgress): ProgressEvent {
  return {
    phase: p.phase,
    digest: p.digest,
    current_bytes: p.currentBytes,
    current_total_bytes: p.currentTotalBytes,
    done_bytes: p.doneBytes,
    total_bytes: p.totalBytes,
    done_items: p.doneItems,
    total_items: p.totalItems,
    message: p.message,
  };
}
