import { describe, expect, it } from "vitest";
import {
  MEDIA_TYPES,
  assertLayerSupported,
  parseManifest,
  parsePlatform,
  selectPlatform,
  zstdAvailable,
  type ImageIndex,
} from "./manifest.js";

const d = (c: string) => `sha256:${c.repeat(64)}`;

const index: ImageIndex = {
  schemaVersion: 2,
  mediaType: MEDIA_TYPES.ociIndex,
  manifests: [
    {
      mediaType: MEDIA_TYPES.ociManifest,
      digest: d("1"),
      size: 1,
      platform: { os: "unknown", architecture: "unknown" },
    },
    {
      mediaType: MEDIA_TYPES.ociManifest,
      digest: d("2"),
      size: 1,
      platform: { os: "linux", architecture: "arm", variant: "v7" },
    },
    {
      mediaType: MEDIA_TYPES.ociManifest,
      digest: d("3"),
      size: 1,
      platform: { os: "linux", architecture: "arm64", variant: "v8" },
    },
    {
      mediaType: MEDIA_TYPES.ociManifest,
      digest: d("4"),
      size: 1,
      platform: { os: "linux", architecture: "amd64" },
    },
  ],
};

describe("selectPlatform", () => {
  it("picks linux/amd64 and skips attestation entries", () => {
    expect(selectPlatform(index, parsePlatform("")).digest).toBe(d("4"));
  });
  it("matches arm64 with or without the v8 variant", () => {
    expect(selectPlatform(index, parsePlatform("linux/arm64")).digest).toBe(d("3"));
    expect(selectPlatform(index, parsePlatform("linux/arm64/v8")).digest).toBe(d("3"));
  });
  it("requires an equal variant otherwise", () => {
    expect(selectPlatform(index, parsePlatform("linux/arm/v7")).digest).toBe(d("2"));
    expect(() => selectPlatform(index, parsePlatform("linux/arm/v6"))).toThrow(
      expect.objectContaining({
        code: "IMAGE_NOT_FOUND",
        message: expect.stringContaining("linux/amd64") as unknown,
      }) as Error,
    );
  });
  it("refuses a malformed platform", () => {
    expect(() => parsePlatform("linux")).toThrow(
      expect.objectContaining({ code: "INVALID_PARAMS" }) as Error,
    );
  });
});

describe("parseManifest", () => {
  const manifest = {
    schemaVersion: 2,
    mediaType: MEDIA_TYPES.dockerManifest,
    config: { mediaType: MEDIA_TYPES.dockerConfig, digest: d("a"), size: 2 },
    layers: [{ mediaType: MEDIA_TYPES.dockerLayerGzip, digest: d("b"), size: 3 }],
  };
  it("tells a Docker manifest list from an image manifest", () => {
    const list = { ...index, mediaType: MEDIA_TYPES.dockerList };
    expect(parseManifest(Buffer.from(JSON.stringify(list)), null).kind).toBe("index");
    expect(parseManifest(Buffer.from(JSON.stringify(manifest)), null).kind).toBe("image");
  });
  it("uses Content-Type when the document has no mediaType", () => {
    const bare = Object.fromEntries(Object.entries(index).filter(([k]) => k !== "mediaType"));
    expect(parseManifest(Buffer.from(JSON.stringify(bare)), MEDIA_TYPES.ociIndex).kind).toBe(
      "index",
    );
  });
  it("refuses schema 1 and garbage", () => {
    const v1 = {
      schemaVersion: 1,
      mediaType: "application/vnd.docker.distribution.manifest.v1+prettyjws",
    };
    expect(() => parseManifest(Buffer.from(JSON.stringify(v1)), null)).toThrow(/not supported/);
    expect(() => parseManifest(Buffer.from("{"), null)).toThrow(/not JSON/);
  });
});

describe("layer media types", () => {
  it.skipIf(zstdAvailable())("reports zstd layers as unsupported on a Node without zstd", () => {
    const layer = { mediaType: MEDIA_TYPES.ociLayerZstd, digest: d("c"), size: 1 };
    expect(() => assertLayerSupported(layer)).toThrow(
      expect.objectContaining({
        code: "IMAGE_LAYER_INVALID",
        message: expect.stringContaining("zstd layers unsupported") as unknown,
      }) as Error,
    );
  });
  it("refuses unknown layer types", () => {
    expect(() =>
      assertLayerSupported({ mediaType: "application/x-foo", digest: d("c"), size: 1 }),
    ).toThrow(expect.objectContaining({ code: "IMAGE_LAYER_INVALID" }) as Error);
  });
});
