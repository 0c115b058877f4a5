import { createHash } from "node:crypto";

/** A blob for {@link pushRawImage}; the digest is computed from `data` unless given. */
export interface RawLayer {
  readonly data: Uint8Array;
  /** Default "application/vnd.oci.image.layer.v1.tar+gzip". */
  readonly mediaType?: string;
  /** Claimed digest written into the manifest (to build deliberately wrong manifests). */
  readonly digest?: string;
}

export interface PushRawImageOptions {
  readonly layers: readonly RawLayer[];
  /** Image config; default a linux/amd64 config whose diff_ids are the layer digests. */
  readonly config?: Record<string, unknown>;
}

export interface PushedRawImage {
  readonly manifestDigest: string;
  readonly configDigest: string;
  readonly layerDigests: readonly string[];
}

export function sha256Digest(data: Uint8Array): string {
  return `sha256:${createHash("sha256").update(data).digest("hex")}`;
}

async function uploadBlob(registryUrl: string, repository: string, data: Uint8Array) {
  const digest = sha256Digest(data);
  const start = await fetch(`${registryUrl}/v2/${repository}/blobs/uploads/`, { method: "POST" });
  await start.arrayBuffer();
  const location = start.headers.get("location");
  if (start.status !== 202 || location === null) {
    throw new Error(`blob upload start: HTTP ${start.status}`);
  }
  const put = new URL(location, registryUrl);
  put.searchParams.set("digest", digest);
  const res = await fetch(put, {
    method: "PUT",
    headers: { "content-type": "application/octet-stream" },
    body: data,
  });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`blob upload: HTTP ${res.status} ${text}`);
  return digest;
}

/**
 * Pushes a hand-made image (OCI manifest) straight to a registry over plain HTTP, bypassing
 * msb's own push code, so tests can serve images msb would never build: corrupt layers,
 * hostile tar entries, wrong digests.
 */
export async function pushRawImage(
  registryUrl: string,
  repository: string,
  tag: string,
  options: PushRawImageOptions,
): Promise<PushedRawImage> {
  const layerDigests: string[] = [];
  const descriptors = [];
  for (const layer of options.layers) {
    const actual = await uploadBlob(registryUrl, repository, layer.data);
    const digest = layer.digest ?? actual;
    layerDigests.push(digest);
    descriptors.push({
      mediaType: layer.mediaType ?? "application/vnd.oci.image.layer.v1.tar+gzip",
      digest,
      size: layer.data.length,
    });
  }
  const config = options.config ?? {
    architecture: "amd64",
    os: "linux",
    config: { Env: ["PATH=/usr/bin:/bin"] },
    rootfs: { type: "layers", diff_ids: layerDigests },
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configDigest = await uploadBlob(registryUrl, repository, configBytes);
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: "application/vnd.oci.image.manifest.v1+json",
      config: {
        mediaType: "application/vnd.oci.image.config.v1+json",
        digest: configDigest,
        size: configBytes.length,
      },
      layers: descriptors,
    }),
  );
  const res = await fetch(`${registryUrl}/v2/${repository}/manifests/${tag}`, {
    method: "PUT",
    headers: { "content-type": "application/vnd.oci.image.manifest.v1+json" },
    body: manifest,
  });
  const text = await res.text();
  if (res.status !== 201) throw new Error(`manifest put: HTTP ${res.status} ${text}`);
  return { manifestDigest: sha256Digest(manifest), configDigest, layerDigests };
}
