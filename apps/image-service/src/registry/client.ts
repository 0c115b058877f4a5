import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { MsbError } from "@msb/errors";
import type { BlobSource, OpenBlob } from "../store/blob-store.js";
import { DOCKER_HUB } from "../reference.js";
import { ForbiddenAddressError } from "./address-guard.js";
import {
  discard,
  header,
  readBody,
  sendHttp,
  TransportError,
  type HttpAnswer,
  type HttpOptions,
  type HttpRequest,
} from "./http.js";
import type { RegistryPolicy } from "./policy.js";

/** Username/password for one registry (basic auth, or the account for a bearer token). */
export interface RegistryCredentials {
  readonly username: string;
  readonly password: string;
}

export interface RegistryClientOptions {
  /** Which registries may be contacted, over which scheme (MSB_REGISTRIES). */
  readonly policy: RegistryPolicy;
  /** Credentials by registry host (`docker.io`, `ghcr.io`, `localhost:5000`). */
  readonly credentials: Readonly<Record<string, RegistryCredentials>>;
  /** Timeouts and the DNS seam. */
  readonly http?: HttpOptions;
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
  /** Throws POLICY_DENIED when `registry` is not allowed. */
  repository(registry: string, repository: string, access: "pull" | "push"): RepositoryClient;
  readonly policy: RegistryPolicy;
}

/** OCI says registries should accept manifests up to 4 MiB; nothing larger is read. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_TOKEN_BYTES = 1024 * 1024;
const MAX_REDIRECTS = 5;
const REDIRECT = new Set([301, 302, 303, 307, 308]);
const MANIFEST_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");

/** A status a registry should not have answered, with the remote body never shown. */
class StatusError extends Error {
  constructor(readonly status: number) {
    super(`HTTP ${status}`);
  }
}

/** The registry named an address it must not (a redirect, a token realm). */
class RedirectRefused extends Error {}

function isJsonObject(bytes: Buffer): boolean {
  try {
    const doc: unknown = JSON.parse(bytes.toString("utf8"));
    return doc !== null && typeof doc === "object" && !Array.isArray(doc);
  } catch {
    return false;
  }
}

/** `Bearer realm="…",service="…"` → scheme and parameters. */
function parseChallenge(value: string): { scheme: string; params: Record<string, string> } {
  const space = value.indexOf(" ");
  const scheme = (space === -1 ? value : value.slice(0, space)).toLowerCase();
  const params: Record<string, string> = {};
  for (const m of value.slice(space + 1).matchAll(/([a-zA-Z_]+)="([^"]*)"/g)) {
    params[(m[1] ?? "").toLowerCase()] = m[2] ?? "";
  }
  return { scheme, params };
}

/**
 * A small OCI distribution client over address-checked HTTP (registry/http.ts): the v2
 * handshake, basic and bearer auth, manifest GET/PUT, blob HEAD/GET (with Range, following
 * redirects only to addresses the policy allows) and the monolithic POST+PUT upload. Errors
 * never carry a remote body; every way of not reaching a registry gives one message.
 */
export function createRegistryClientFactory(options: RegistryClientOptions): RegistryClientFactory {
  const { policy } = options;
  const send = (req: Omit<HttpRequest, "allowNonPublic">): Promise<HttpAnswer> =>
    sendHttp({ ...req, allowNonPublic: policy.isListed(req.url.host) }, options.http);

  return {
    policy,
    repository(registry, repository, access) {
      policy.assertAllowed(registry);
      const push = access === "push";
      const base = new URL(
        registry === DOCKER_HUB
          ? "https://registry-1.docker.io"
          : `${policy.isPlainHttp(registry) ? "http" : "https"}://${registry}`,
      );
      const credentials = options.credentials[registry];
      const scope = `repository:${repository}:${push ? "pull,push" : "pull"}`;
      const basic =
        credentials === undefined
          ? undefined
          : `Basic ${Buffer.from(`${credentials.username}:${credentials.password}`).toString("base64")}`;

      function toMsbError(err: unknown, what: string, signal: AbortSignal | undefined): unknown {
        if (signal?.aborted === true) return signal.reason;
        if (err instanceof MsbError) return err;
        const details = { registry, repository };
        if (err instanceof ForbiddenAddressError && err.host === base.hostname) {
          return new MsbError(
            "POLICY_DENIED",
            `Registry ${registry} resolves to a loopback, private or link-local address. msb contacts such registries only when MSB_REGISTRIES lists them by name.`,
            { details },
          );
        }
        if (err instanceof ForbiddenAddressError || err instanceof RedirectRefused) {
          return new MsbError(
            push ? "IMAGE_PUSH_FAILED" : "IMAGE_PULL_FAILED",
            `Registry ${registry} redirected msb to an address it does not contact (loopback, link-local, private or this host's own) while ${what}. Use another registry or ask its operator.`,
            { details },
          );
        }
        if (err instanceof StatusError) {
          const { status } = err;
          if (status === 401 || status === 403) {
            return new MsbError(
              "REGISTRY_AUTH_FAILED",
              `Registry ${registry} refused access to ${repository} (HTTP ${status}) while ${what}. Check MSB_REGISTRY_AUTH / the credentials for that registry${push ? " and that they may push" : ""}.`,
              { details: { ...details, status } },
            );
          }
          if (status === 404 && !push) {
            return new MsbError(
              "IMAGE_NOT_FOUND",
              `Registry ${registry} has no ${what.replace(/^fetching /, "")} in ${repository}. Check the name and tag.`,
              { details: { ...details, status } },
            );
          }
          return new MsbError(
            push ? "IMAGE_PUSH_FAILED" : "IMAGE_PULL_FAILED",
            `Registry ${registry} answered HTTP ${status} while ${what}. Retry; partial downloads are resumed, never used.`,
            { details: { ...details, status } },
          );
        }
        // Closed port, open non-HTTP port, HTTP server that is no registry, TLS, timeouts:
        // one message, so errors cannot be used to tell them apart (no port scanner).
        return new MsbError(
          "REGISTRY_UNREACHABLE",
          `Registry ${registry} cannot be reached or does not answer as an OCI registry while ${what}. Check the address and that the registry is up; a plain-HTTP registry must be in MSB_INSECURE_REGISTRIES.`,
          { details, cause: err },
        );
      }

      async function wrap<T>(what: string, signal: AbortSignal | undefined, fn: () => Promise<T>) {
        try {
          return await fn();
        } catch (err) {
          throw toMsbError(err, what, signal);
        }
      }

      /** The v2 handshake and, when challenged, a token: the Authorization header to send. */
      async function login(signal: AbortSignal | undefined): Promise<string | undefined> {
        const ping = await send({ method: "GET", url: new URL("/v2/", base), signal });
        discard(ping);
        const challenge = header(ping, "www-authenticate");
        if (ping.status === 200) return basic;
        if (ping.status !== 401 || challenge === undefined) {
          throw new TransportError(`GET /v2/ answered ${ping.status}: not an OCI registry`);
        }
        const { scheme, params } = parseChallenge(challenge);
        if (scheme === "basic") return basic;
        if (scheme !== "bearer" || params["realm"] === undefined) {
          throw new TransportError(`unsupported auth challenge ${scheme}`);
        }
        let realm: URL;
        try {
          realm = new URL(params["realm"]);
        } catch {
          throw new TransportError("the token realm is not a URL");
        }
        if (params["service"] !== undefined) realm.searchParams.set("service", params["service"]);
        realm.searchParams.set("scope", scope);
        if (credentials !== undefined) realm.searchParams.set("account", credentials.username);
        const answer = await send({
          method: "GET",
          url: realm,
          headers: basic === undefined ? {} : { authorization: basic },
          signal,
        }).catch((err: unknown) => {
          throw err instanceof ForbiddenAddressError ? new RedirectRefused() : err;
        });
        if (answer.status !== 200) {
          discard(answer);
          throw new StatusError(
            answer.status === 401 || answer.status === 403 ? answer.status : 401,
          );
        }
        let token: unknown;
        try {
          const doc = JSON.parse((await readBody(answer, MAX_TOKEN_BYTES)).toString("utf8")) as {
            token?: unknown;
            access_token?: unknown;
          };
          token = doc.token ?? doc.access_token;
        } catch {
          token = undefined;
        }
        if (typeof token !== "string" || token === "") throw new StatusError(401);
        return `Bearer ${token}`;
      }

      let auth: Promise<string | undefined> | undefined;
      const authorization = (signal: AbortSignal | undefined, fresh = false) => {
        if (fresh || auth === undefined) {
          auth = login(signal);
          auth.catch(() => {
            auth = undefined;
          });
        }
        return auth;
      };

      /**
       * One registry call with auth (sent to the registry's own origin only), a second
       * login on 401, and redirects followed when `follow` (each hop address-checked; hops
       * leave the registry's origin only to public addresses or listed registries).
       */
      async function call(
        req: Omit<HttpRequest, "allowNonPublic" | "url"> & { url: URL; follow?: boolean },
      ): Promise<HttpAnswer> {
        let authHeader = await authorization(req.signal);
        let retried = false;
        let url = req.url;
        for (let hop = 0; hop <= MAX_REDIRECTS; hop += 1) {
          const headers: Record<string, string> = { ...req.headers };
          if (authHeader !== undefined && url.origin === base.origin) {
            headers["authorization"] = authHeader;
          }
          const answer = await send({ ...req, url, headers }).catch((err: unknown) => {
            throw hop > 0 && err instanceof ForbiddenAddressError ? new RedirectRefused() : err;
          });
          const location = header(answer, "location");
          if (req.follow === true && REDIRECT.has(answer.status) && location !== undefined) {
            discard(answer);
            try {
              url = new URL(location, url);
            } catch {
              throw new TransportError("the redirect target is not a URL");
            }
            continue;
          }
          if (answer.status === 401 && !retried && req.body === undefined) {
            discard(answer);
            retried = true;
            authHeader = await authorization(req.signal, true);
            continue;
          }
          return answer;
        }
        throw new TransportError("too many redirects");
      }

      const path = (suffix: string) => new URL(`/v2/${repository}/${suffix}`, base);

      /** A blob's bytes; a transfer that breaks off ends in a typed, resumable error. */
      async function* body(
        answer: HttpAnswer,
        digest: string,
        signal: AbortSignal | undefined,
      ): AsyncGenerator<Buffer> {
        try {
          for await (const chunk of answer.body as AsyncIterable<Buffer>) yield chunk;
        } catch (err) {
          if (signal?.aborted === true) throw signal.reason;
          throw new MsbError(
            push ? "IMAGE_PUSH_FAILED" : "IMAGE_PULL_FAILED",
            `Registry ${registry} stopped sending blob ${digest} part-way. Retry; the download resumes where it stopped.`,
            { details: { registry, repository, digest }, cause: err },
          );
        } finally {
          answer.body.destroy();
        }
      }

      async function getBlob(
        digest: string,
        offset: number,
        signal: AbortSignal | undefined,
      ): Promise<BlobSource> {
        const answer = await call({
          method: "GET",
          url: path(`blobs/${digest}`),
          headers: offset > 0 ? { range: `bytes=${offset}-` } : {},
          follow: true,
          signal,
        });
        if (answer.status === 200) return { resumed: false, stream: body(answer, digest, signal) };
        const range = header(answer, "content-range");
        if (answer.status === 206 && range?.startsWith(`bytes ${offset}-`) === true) {
          return { resumed: true, stream: body(answer, digest, signal) };
        }
        discard(answer);
        if (answer.status === 206) return getBlob(digest, 0, signal);
        throw new StatusError(answer.status);
      }

      return {
        registry,
        repository,
        getManifest: (reference, signal) =>
          wrap(`fetching manifest ${reference}`, signal, async () => {
            const answer = await call({
              method: "GET",
              url: path(`manifests/${reference}`),
              headers: { accept: MANIFEST_TYPES },
              follow: true,
              signal,
            });
            if (answer.status !== 200) {
              discard(answer);
              throw new StatusError(answer.status);
            }
            const bytes = await readBody(answer, MAX_MANIFEST_BYTES);
            if (!isJsonObject(bytes)) {
              throw new TransportError("the manifest answer is not a JSON document");
            }
            const digest = `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
            return { bytes, contentType: header(answer, "content-type") ?? null, digest };
          }),
        blobOpener: (digest) => (offset, signal) =>
          wrap(`fetching blob ${digest}`, signal, () => getBlob(digest, offset, signal)),
        hasBlob: (digest, signal) =>
          wrap(`checking blob ${digest}`, signal, async () => {
            const answer = await call({
              method: "HEAD",
              url: path(`blobs/${digest}`),
              follow: true,
              signal,
            });
            discard(answer);
            if (answer.status === 200) return true;
            if (answer.status === 404) return false;
            throw new StatusError(answer.status);
          }),
        uploadBlob: (digest, sizeBytes, file, signal) =>
          wrap(`uploading blob ${digest}`, signal, async () => {
            const start = await call({ method: "POST", url: path("blobs/uploads/"), signal });
            discard(start);
            const location = header(start, "location");
            if (start.status !== 202 || location === undefined) {
              throw new StatusError(start.status);
            }
            const target = new URL(location, start.url);
            target.searchParams.set("digest", digest);
            const put = await call({
              method: "PUT",
              url: target,
              headers: {
                "content-type": "application/octet-stream",
                "content-length": String(sizeBytes),
              },
              body: createReadStream(file),
              signal,
            });
            discard(put);
            if (put.status !== 201) throw new StatusError(put.status);
          }),
        putManifest: (reference, bytes, mediaType, signal) =>
          wrap(`putting manifest ${reference}`, signal, async () => {
            const answer = await call({
              method: "PUT",
              url: path(`manifests/${reference}`),
              headers: { "content-type": mediaType },
              body: bytes,
              signal,
            });
            discard(answer);
            if (answer.status !== 201 && answer.status !== 200) {
              throw new StatusError(answer.status);
            }
          }),
      };
    },
  };
}
