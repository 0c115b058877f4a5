import { homedir } from "node:os";
import { join } from "node:path";
import { MsbError } from "@msb/errors";
import { z } from "zod";
import { DEFAULT_REGISTRIES } from "./registry/policy.js";

const credentialsSchema = z.record(
  z.object({ username: z.string(), password: z.string() }).strict(),
);

/** Configuration of the image service; every field comes from an `MSB_` variable. */
export interface ImageServiceConfig {
  /** `MSB_HOME`, default `~/.msb`; the store is `$MSB_HOME/images`. */
  readonly home: string;
  /** `MSB_IMAGE_SERVICE_ADDR`, default `unix:$MSB_HOME/run/image-service.sock`. */
  readonly address: string;
  /**
   * `MSB_REGISTRIES`: comma list of `host[:port]` the service may pull from and push to, or
   * `*` for any registry with public addresses. Default `docker.io,ghcr.io,quay.io`. A loopback
   * or private registry is contacted only when listed here by name (then over plain HTTP
   * when it is loopback).
   */
  readonly registries: readonly string[];
  /** `MSB_INSECURE_REGISTRIES`: comma list of `host[:port]` reached over plain HTTP (listed too). */
  readonly insecureRegistries: readonly string[];
  /** `MSB_IMAGE_MAX_LAYER_BYTES`, default 4 GiB: uncompressed bytes one layer may unpack to. */
  readonly maxLayerBytes: number;
  /** `MSB_IMAGE_MAX_BYTES`, default 8 GiB: uncompressed bytes all layers of an image may unpack to. */
  readonly maxImageBytes: number;
  /** `MSB_CACHE_DIR`, default `~/.cache/msb`: image builds in `image-builds/`, shared rootfs files in `rootfs/`. */
  readonly cacheDir: string;
  /** `MSB_ROOTFS_CACHE` (default `1`): share built rootfs files via `$MSB_CACHE_DIR/rootfs/`; `0` = per home. */
  readonly rootfsCache: boolean;
  /** `MSB_REGISTRY_AUTH`: JSON `{"host": {"username": "…", "password": "…"}}`. */
  readonly registryAuth: Readonly<Record<string, { username: string; password: string }>>;
}

const GIB = 1024 * 1024 * 1024;
const byteCount = z
  .string()
  .regex(/^[1-9]\d{0,15}$/, "must be a positive number of bytes")
  .transform(Number);

/** A comma list, trimmed, without empty entries. */
function list(value: string | undefined): string[] {
  return (value ?? "")
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

const envSchema = z.object({
  MSB_HOME: z.string().min(1).optional(),
  MSB_IMAGE_SERVICE_ADDR: z
    .string()
    .regex(/^(unix:.+|[^:]+:\d+|\[[0-9a-fA-F:]+\]:\d+)$/, "must be unix:/path or host:port")
    .optional(),
  MSB_REGISTRIES: z.string().optional(),
  MSB_INSECURE_REGISTRIES: z.string().optional(),
  MSB_IMAGE_MAX_LAYER_BYTES: byteCount.optional(),
  MSB_IMAGE_MAX_BYTES: byteCount.optional(),
  MSB_CACHE_DIR: z.string().min(1).optional(),
  MSB_REGISTRY_AUTH: z.string().optional(),
  MSB_ROOTFS_CACHE: z.enum(["0", "1"]).optional(),
});

/** Pure: reads the configuration from `env` (normally `process.env`), throwing CONFIG_INVALID. */
export function loadConfig(
  env: Record<string, string | undefined>,
  home = homedir(),
): ImageServiceConfig {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new MsbError(
      "CONFIG_INVALID",
      `${issue?.path.join(".") ?? "environment"}: ${issue?.message ?? "invalid"}. Fix the variable (docs/conventions.md lists them).`,
      { details: { issues: parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`) } },
    );
  }
  const e = parsed.data;
  const msbHome = e.MSB_HOME ?? join(home, ".msb");
  let registryAuth: ImageServiceConfig["registryAuth"] = {};
  if (e.MSB_REGISTRY_AUTH !== undefined && e.MSB_REGISTRY_AUTH.trim() !== "") {
    let doc: unknown;
    try {
      doc = JSON.parse(e.MSB_REGISTRY_AUTH);
    } catch {
      doc = undefined;
    }
    const creds = credentialsSchema.safeParse(doc);
    if (!creds.success) {
      throw new MsbError(
        "CONFIG_INVALID",
        'MSB_REGISTRY_AUTH must be JSON like {"registry.example.com": {"username": "u", "password": "p"}}.',
      );
    }
    registryAuth = creds.data;
  }
  return {
    home: msbHome,
    address: e.MSB_IMAGE_SERVICE_ADDR ?? `unix:${join(msbHome, "run", "image-service.sock")}`,
    registries: e.MSB_REGISTRIES === undefined ? DEFAULT_REGISTRIES : list(e.MSB_REGISTRIES),
    insecureRegistries: list(e.MSB_INSECURE_REGISTRIES),
    maxLayerBytes: e.MSB_IMAGE_MAX_LAYER_BYTES ?? 4 * GIB,
    maxImageBytes: e.MSB_IMAGE_MAX_BYTES ?? 8 * GIB,
    cacheDir: e.MSB_CACHE_DIR ?? join(home, ".cache", "msb"),
    rootfsCache: e.MSB_ROOTFS_CACHE !== "0",
    registryAuth,
  };
}
