import * as zlibModule from "node:zlib";
import { MsbError } from "@msb/errors";
import { z } from "zod";

export const MEDIA_TYPES = {
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
  ociConfig: "application/vnd.oci.image.config.v1+json",
  ociLayerTar: "application/vnd.oci.image.layer.v1.tar",
  ociLayerGzip: "application/vnd.oci.image.layer.v1.tar+gzip",
  ociLayerZstd: "application/vnd.oci.image.layer.v1.tar+zstd",
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerList: "application/vnd.docker.distribution.manifest.list.v2+json",
  dockerConfig: "application/vnd.docker.container.image.v1+json",
  dockerLayerGzip: "application/vnd.docker.image.rootfs.diff.tar.gzip",
  dockerLayerForeignGzip: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
} as const;

/** Every manifest media type we ask registries for, most preferred first. */
export const MANIFEST_ACCEPT = [
  MEDIA_TYPES.ociIndex,
  MEDIA_TYPES.dockerList,
  MEDIA_TYPES.ociManifest,
  MEDIA_TYPES.dockerManifest,
];

const digest = z.string().regex(/^sha256:[a-f0-9]{64}$/, "expected sha256:<64 hex>");

export const descriptorSchema = z.object({
  mediaType: z.string(),
  digest,
  size: z.number().int().nonnegative(),
  urls: z.array(z.string()).optional(),
  annotations: z.record(z.string()).optional(),
});
export type Descriptor = z.infer<typeof descriptorSchema>;

export const imageManifestSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  config: descriptorSchema,
  layers: z.array(descriptorSchema),
  annotations: z.record(z.string()).optional(),
});
export type ImageManifest = z.infer<typeof imageManifestSchema>;

const platformSchema = z.object({
  architecture: z.string(),
  os: z.string(),
  variant: z.string().optional(),
  "os.version": z.string().optional(),
});

export const imageIndexSchema = z.object({
  schemaVersion: z.literal(2),
  mediaType: z.string().optional(),
  manifests: z.array(descriptorSchema.extend({ platform: platformSchema.optional() })),
});
export type ImageIndex = z.infer<typeof imageIndexSchema>;

/** The runtime part of an OCI/Docker image config; unknown fields are kept in the blob. */
export const imageConfigSchema = z.object({
  architecture: z.string().optional(),
  os: z.string().optional(),
  variant: z.string().optional(),
  config: z
    .object({
      Env: z.array(z.string()).nullish(),
      Entrypoint: z.array(z.string()).nullish(),
      Cmd: z.array(z.string()).nullish(),
      WorkingDir: z.string().nullish(),
      User: z.string().nullish(),
      Labels: z.record(z.string()).nullish(),
    })
    .nullish(),
  rootfs: z.object({ type: z.string(), diff_ids: z.array(digest) }).optional(),
});
export type ImageConfigBlob = z.infer<typeof imageConfigSchema>;

export type ParsedManifest =
  | { readonly kind: "index"; readonly index: ImageIndex }
  | { readonly kind: "image"; readonly manifest: ImageManifest };

/**
 * Classifies and validates a manifest document. The media type comes from the document or,
 * for registries that leave it out, from the Content-Type header.
 */
export function parseManifest(bytes: Uint8Array, contentType: string | null): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString("utf8"));
  } catch {
    throw badManifest("it is not JSON");
  }
  const declared =
    doc !== null &&
    typeof doc === "object" &&
    "mediaType" in doc &&
    typeof doc.mediaType === "string"
      ? doc.mediaType
      : (contentType?.split(";")[0]?.trim() ?? "");
  const isIndex =
    declared === MEDIA_TYPES.ociIndex ||
    declared === MEDIA_TYPES.dockerList ||
    (declared === "" && doc !== null && typeof doc === "object" && "manifests" in doc);
  if (isIndex) {
    const parsed = imageIndexSchema.safeParse(doc);
    if (!parsed.success) throw badManifest(issueText(parsed.error.issues[0]));
    return { kind: "index", index: parsed.data };
  }
  if (
    declared !== "" &&
    declared !== MEDIA_TYPES.ociManifest &&
    declared !== MEDIA_TYPES.dockerManifest &&
    declared !== "application/json"
  ) {
    // Only a string shaped like a media type is repeated: never other remote text.
    const shown = /^[\w.+-]{1,64}\/[\w.+-]{1,100}$/.test(declared) ? `'${declared}'` : "";
    throw badManifest(`media type ${shown} is not supported (schema 1 images are not)`);
  }
  const parsed = imageManifestSchema.safeParse(doc);
  if (!parsed.success) {
    throw badManifest(issueText(parsed.error.issues[0]));
  }
  return { kind: "image", manifest: parsed.data };
}

/** Where the document is wrong, by field path and kind of problem: never the remote value. */
function issueText(issue: { path: (string | number)[]; code: string } | undefined): string {
  if (issue === undefined) return "it is not a manifest";
  return `${issue.path.join(".") || "the document"} is missing or invalid (${issue.code})`;
}

function badManifest(why: string): MsbError {
  return new MsbError(
    "IMAGE_PULL_FAILED",
    `The registry returned a manifest msb cannot use: ${why}. Check the reference; msb supports OCI and Docker v2 images.`,
    { details: { reason: why } },
  );
}

/** A platform such as `linux/amd64` or `linux/arm64/v8`. */
export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

export function parsePlatform(text: string): Platform {
  const value = text.trim() === "" ? "linux/amd64" : text.trim();
  const [os, architecture, variant, extra] = value.split("/");
  if (
    os === undefined ||
    os === "" ||
    architecture === undefined ||
    architecture === "" ||
    extra !== undefined
  ) {
    throw new MsbError(
      "INVALID_PARAMS",
      `Platform '${text}' is not os/arch[/variant]. Use e.g. linux/amd64 or linux/arm64.`,
      { details: { platform: text } },
    );
  }
  return variant === undefined || variant === ""
    ? { os, architecture }
    : { os, architecture, variant };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant === undefined ? "" : `/${p.variant}`}`;
}

/**
 * Picks the manifest for `want` from an index / manifest list. Attestation manifests
 * (`unknown/unknown`) never match. For arm64 a missing variant matches `v8` (and vice versa),
 * as containerd does; otherwise a wanted variant must be equal.
 */
export function selectPlatform(index: ImageIndex, want: Platform): Descriptor {
  const normVariant = (arch: string, variant: string | undefined): string | undefined =>
    arch === "arm64" && (variant === undefined || variant === "v8") ? undefined : variant;
  const candidates = index.manifests.filter(
    (m) =>
      m.platform !== undefined &&
      m.platform.os === want.os &&
      m.platform.architecture === want.architecture &&
      (want.variant === undefined ||
        normVariant(m.platform.architecture, m.platform.variant) ===
          normVariant(want.architecture, want.variant)),
  );
  const chosen = candidates[0];
  if (chosen === undefined) {
    const available = index.manifests
      .filter((m) => m.platform !== undefined && m.platform.os !== "unknown")
      .map((m) => formatPlatform(m.platform as Platform));
    throw new MsbError(
      "IMAGE_NOT_FOUND",
      `The image has no variant for ${formatPlatform(want)} (it has: ${available.join(", ") || "none"}). Pick one of those platforms or another image.`,
      { details: { platform: formatPlatform(want), available } },
    );
  }
  return chosen;
}

/** How a layer blob is compressed, from its media type. */
export type LayerCompression = "gzip" | "none" | "zstd";

export function layerCompression(mediaType: string): LayerCompression {
  switch (mediaType) {
    case MEDIA_TYPES.ociLayerGzip:
    case MEDIA_TYPES.dockerLayerGzip:
    case MEDIA_TYPES.dockerLayerForeignGzip:
    case "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip":
      return "gzip";
    case MEDIA_TYPES.ociLayerTar:
    case "application/vnd.docker.image.rootfs.diff.tar":
    case "application/vnd.oci.image.layer.nondistributable.v1.tar":
      return "none";
    case MEDIA_TYPES.ociLayerZstd:
    case "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd":
      return "zstd";
    default:
      throw new MsbError(
        "IMAGE_LAYER_INVALID",
        `Layer media type '${mediaType}' is not supported; msb unpacks tar, tar+gzip (and tar+zstd where Node has zstd). Rebuild the image with gzip layers.`,
        { details: { mediaType } },
      );
  }
}

/** Throws the documented error when a layer needs zstd and this Node lacks it. */
export function assertLayerSupported(layer: Descriptor): void {
  if (layerCompression(layer.mediaType) === "zstd" && !zstdAvailable()) {
    throw new MsbError(
      "IMAGE_LAYER_INVALID",
      `zstd layers unsupported: layer ${layer.digest} is tar+zstd and this Node.js (${process.version}) has no zstd in zlib. Use an image with gzip layers, or run msb on Node.js >= 22.15.`,
      { details: { digest: layer.digest, mediaType: layer.mediaType } },
    );
  }
}

export function zstdAvailable(): boolean {
  return "createZstdDecompress" in (zlibModule as object);
}
