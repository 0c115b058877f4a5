import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { Readable } from "node:stream";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { MsbError } from "@msb/errors";
import { RegistryClientV2, type RegistryRepo } from "oci-registry-client";
import type { BlobSource, OpenBlob } from "../store/blob-store.js";
import { DOCKER_HUB } from "../reference.js";

/** Username/password for one registry (basic auth, or the account for a bearer token). */
export interface RegistryCredentials {
  readonly username: string;
  readonly password: string;
}

export interface RegistryClientOptions {
  /** `host[:port]` entries reached over plain HTTP, besides loopback hosts. */
  readonly insecureRegistries: readonly string[];
  /** Credentials by registry host (`docker.io`, `ghcr.io`, `localhost:5000`). */
  readonly credentials: Readonly<Record<string, RegistryCredentials>>;
}

export interface FetchedManifest {
  readonly bytes: Buffer;
  readonly contentType: string | null;
  /** sha256 of the bytes as received. */
  readonly digest: string;
}

/** One repository on one registry, for one kind of access. */
export interface RepositoryClient {
  readonly registry: string;
  readonly repository: string;
  getManifest(reference: string, signal?: AbortSignal): Promise<FetchedManifest>;
  /** An {@link OpenBlob} for the blob store: streaming GET with Range for resumes. */
  blobOpener(digest: string): OpenBlob;
  hasBlob(digest: string, signal?: AbortSignal): Promise<boolean>;
  uploadBlob(digest: string, sizeBytes: number, path: string, signal?: AbortSignal): Promise<void>;
  putManifest(
    reference: string,
    bytes: Buffer,
    mediaType: string,
    signal?: AbortSignal,
  ): Promise<void>;
}

export interface RegistryClientFactory {
  repository(registry: string, repository: string, access: "pull" | "push"): RepositoryClient;
  /** True when `registry` is reached over plain HTTP. */
  isInsecure(registry: string): boolean;
}

function isLoopback(registry: string): boolean {
  const host = registry.startsWith("[")
    ? registry.slice(0, registry.indexOf("]") + 1)
    : registry.split(":")[0];
  return host === "localhost" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host ?? "");
}

/** What oci-registry-client and both fetch implementations throw, as one msb error. */
export function registryError(
  err: unknown,
  ctx: { registry: string; repository: string; what: string; push?: boolean },
): MsbError {
  if (err instanceof MsbError) return err;
  const e = err as {
    name?: string;
    message?: string;
    code?: string;
    errno?: string;
    cause?: { code?: string; message?: string };
    resp?: { status?: number };
  };
  const netCode = e.cause?.code ?? (e.name === "FetchError" ? (e.code ?? e.errno) : undefined);
  const details = { registry: ctx.registry, repository: ctx.repository };
  if (netCode !== undefined || (e.name === "TypeError" && e.message === "fetch failed")) {
    return new MsbError(
      "REGISTRY_UNREACHABLE",
      `Registry ${ctx.registry} cannot be reached (${netCode ?? e.cause?.message ?? "network error"}) while ${ctx.what}. Check the address; for a plain-HTTP registry add it to MSB_INSECURE_REGISTRIES (loopback is allowed by default).`,
      { details: { ...details, cause: netCode }, cause: err },
    );
  }
  const status = e.resp?.status;
  if (status === 401 || status === 403) {
    return new MsbError(
      "REGISTRY_AUTH_FAILED",
      `Registry ${ctx.registry} refused access to ${ctx.repository} (HTTP ${status}) while ${ctx.what}. Check MSB_REGISTRY_AUTH / the credentials for that registry${ctx.push === true ? " and that they may push" : ""}.`,
      { details: { ...details, status }, cause: err },
    );
  }
  if (status === 404 && ctx.push !== true) {
    return new MsbError(
      "IMAGE_NOT_FOUND",
      `Registry ${ctx.registry} has no ${ctx.what.replace(/^fetching /, "")} in ${ctx.repository}. Check the name and tag.`,
      { details: { ...details, status }, cause: err },
    );
  }
  const firstLine = (e.message ?? String(err)).split("\n").slice(0, 2).join(" ");
  return new MsbError(
    ctx.push === true ? "IMAGE_PUSH_FAILED" : "IMAGE_PULL_FAILED",
    `Registry ${ctx.registry} failed while ${ctx.what}${status === undefined ? "" : ` (HTTP ${status})`}: ${firstLine}. Retry; partial downloads are resumed, never used.`,
    { details: { ...details, status }, cause: err },
  );
}

/** Rejects with the signal's reason when it aborts first (the library takes no signal). */
function raceAbort<T>(promise: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (signal === undefined) return promise;
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(signal.reason as Error);
    signal.addEventListener("abort", onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener("abort", onAbort);
        resolve(v);
      },
      (err: unknown) => {
        signal.removeEventListener("abort", onAbort);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/**
 * Registry access built on oci-registry-client. The library does the v2 handshake, the
 * auth challenge (basic or bearer token), manifest GET/PUT, blob HEAD and the monolithic
 * POST+PUT upload. It cannot stream a blob from an offset (no Range, 206 is an error) nor
 * take an AbortSignal, so blob downloads are our own `fetch` with the library's auth
 * (see README, "What oci-registry-client does and does not do").
 */
export function createRegistryClientFactory(options: RegistryClientOptions): RegistryClientFactory {
  const insecure = new Set(options.insecureRegistries.map((r) => r.trim()).filter((r) => r !== ""));
  const isInsecure = (registry: string): boolean =>
    isLoopback(registry) || insecure.has(registry) || insecure.has(registry.split(":")[0] ?? "");

  return {
    isInsecure,
    repository(registry, repository, access) {
      const scheme = isInsecure(registry) && registry !== DOCKER_HUB ? "http" : "https";
      const official = registry === DOCKER_HUB;
      const repo: RegistryRepo = {
        index: { name: registry, official, scheme },
        official: official && repository.startsWith("library/"),
        remoteName: repository,
        localName: `${registry}/${repository}`,
        canonicalName: `${registry}/${repository}`,
      };
      const credentials = options.credentials[registry];
      const lib = new RegistryClientV2({
        repo,
        scheme,
        acceptOCIManifests: true,
        acceptManifestLists: true,
        scopes: access === "push" ? ["pull", "push"] : ["pull"],
        ...(credentials === undefined
          ? {}
          : { username: credentials.username, password: credentials.password }),
      });
      const baseUrl = official ? "https://registry-1.docker.io" : `${scheme}://${registry}`;
      const scope = `repository:${repository}:${access === "push" ? "pull,push" : "pull"}`;
      let auth: Promise<string | undefined> | undefined;
      const authorization = (fresh = false): Promise<string | undefined> => {
        if (fresh || auth === undefined) {
          auth = lib.performLogin({ scope }).then((info) => {
            if (info.type === "Bearer") return `Bearer ${info.token}`;
            if (info.type === "Basic") {
              return `Basic ${Buffer.from(`${info.username}:${info.password}`).toString("base64")}`;
            }
            return undefined;
          });
          auth.catch(() => {
            auth = undefined;
          });
        }
        return auth;
      };
      const ctx = (what: string) => ({ registry, repository, what, push: access === "push" });

      async function getBlob(
        digest: string,
        offset: number,
        signal: AbortSignal | undefined,
      ): Promise<BlobSource> {
        let url = new URL(`/v2/${repository}/blobs/${digest}`, baseUrl);
        let retriedAuth = false;
        let authHeader = await authorization();
        for (let hop = 0; hop < 6; hop += 1) {
          const headers: Record<string, string> = { "user-agent": "msb-image-service" };
          if (authHeader !== undefined && url.origin === new URL(baseUrl).origin) {
            headers["authorization"] = authHeader;
          }
          if (offset > 0) headers["range"] = `bytes=${offset}-`;
          const res = await fetch(url, {
            headers,
            redirect: "manual",
            ...(signal ? { signal } : {}),
          });
          if ([301, 302, 303, 307, 308].includes(res.status)) {
            const location = res.headers.get("location");
            await res.body?.cancel();
            if (location === null) break;
            url = new URL(location, url);
            continue;
          }
          if (res.status === 401 && !retriedAuth) {
            await res.body?.cancel();
            retriedAuth = true;
            authHeader = await authorization(true);
            continue;
          }
          if (res.status === 200 || res.status === 206) {
            const range = res.headers.get("content-range");
            const resumed =
              res.status === 206 && range !== null && range.startsWith(`bytes ${offset}-`);
            if (res.status === 206 && !resumed) {
              await res.body?.cancel();
              return getBlob(digest, 0, signal);
            }
            if (res.body === null) throw new Error("empty response body");
            return {
              resumed,
              stream: Readable.fromWeb(res.body as WebReadableStream<Uint8Array>),
            };
          }
          const text = await res.text().catch(() => "");
          throw Object.assign(new Error(`HTTP ${res.status} ${text.slice(0, 200)}`), {
            resp: { status: res.status },
          });
        }
        throw new Error(`too many redirects fetching blob ${digest}`);
      }

      return {
        registry,
        repository,
        async getManifest(reference, signal) {
          try {
            const { resp } = await raceAbort(lib.getManifest({ ref: reference }), signal);
            const bytes = Buffer.from(await resp.dockerBody());
            const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
            // The library's types extend node-fetch's Response, whose types are not installed.
            const headers = (resp as unknown as { headers: { get(name: string): string | null } })
              .headers;
            return { bytes, contentType: headers.get("content-type"), digest };
          } catch (err) {
            if (signal?.aborted === true) throw signal.reason;
            throw registryError(err, ctx(`fetching manifest ${reference}`));
          }
        },
        blobOpener(digest) {
          return async (offset, signal) => {
            try {
              return await getBlob(digest, offset, signal);
            } catch (err) {
              if (signal?.aborted === true) throw signal.reason;
              throw registryError(err, ctx(`fetching blob ${digest}`));
            }
          };
        },
        async hasBlob(digest, signal) {
          try {
            await raceAbort(lib.headBlob({ digest }), signal);
            return true;
          } catch (err) {
            if ((err as { resp?: { status?: number } }).resp?.status === 404) return false;
            if (signal?.aborted === true) throw signal.reason;
            throw registryError(err, ctx(`checking blob ${digest}`));
          }
        },
        async uploadBlob(digest, sizeBytes, path, signal) {
          try {
            await raceAbort(
              lib.blobUpload({ digest, stream: createReadStream(path), contentLength: sizeBytes }),
              signal,
            );
          } catch (err) {
            if (signal?.aborted === true) throw signal.reason;
            throw registryError(err, ctx(`uploading blob ${digest}`));
          }
        },
        async putManifest(reference, bytes, mediaType, signal) {
          try {
            await raceAbort(
              lib.putManifest({ manifestData: bytes, ref: reference, mediaType }),
              signal,
            );
          } catch (err) {
            if (signal?.aborted === true) throw signal.reason;
            throw registryError(err, ctx(`putting manifest ${reference}`));
          }
        },
      };
    },
  };
}
