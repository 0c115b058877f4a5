import { describe, expect, it } from "vitest";
import { loadConfig } from "./config.js";

describe("loadConfig", () => {
  it("derives every default from MSB_HOME and the home directory", () => {
    expect(loadConfig({}, "/home/u")).toEqual({
      home: "/home/u/.msb",
      address: "unix:/home/u/.msb/run/image-service.sock",
      registries: ["docker.io", "ghcr.io", "quay.io"],
      insecureRegistries: [],
      maxLayerBytes: 4 * 1024 ** 3,
      maxImageBytes: 8 * 1024 ** 3,
      cacheDir: "/home/u/.cache/msb",
      rootfsCache: true,
      registryAuth: {},
    });
    expect(loadConfig({ MSB_HOME: "/srv/msb" }).address).toBe(
      "unix:/srv/msb/run/image-service.sock",
    );
  });

  it("reads insecure registries and credentials", () => {
    const c = loadConfig({
      MSB_INSECURE_REGISTRIES: "reg.lan:5000, other.lan",
      MSB_REGISTRY_AUTH: '{"ghcr.io":{"username":"u","password":"p"}}',
    });
    expect(c.insecureRegistries).toEqual(["reg.lan:5000", "other.lan"]);
    expect(c.registryAuth["ghcr.io"]).toEqual({ username: "u", password: "p" });
  });

  it("reads the registry allow-list (empty = none) and the unpack caps", () => {
    const c = loadConfig({
      MSB_REGISTRIES: "docker.io, 127.0.0.1:5000",
      MSB_IMAGE_MAX_LAYER_BYTES: "1048576",
      MSB_IMAGE_MAX_BYTES: "2097152",
    });
    expect(c.registries).toEqual(["docker.io", "127.0.0.1:5000"]);
    expect([c.maxLayerBytes, c.maxImageBytes]).toEqual([1048576, 2097152]);
    expect(loadConfig({ MSB_REGISTRIES: "" }).registries).toEqual([]);
    expect(() => loadConfig({ MSB_IMAGE_MAX_BYTES: "-1" })).toThrow(
      expect.objectContaining({ code: "CONFIG_INVALID" }) as Error,
    );
  });

  it("reads MSB_CACHE_DIR and MSB_ROOTFS_CACHE", () => {
    const c = loadConfig({ MSB_CACHE_DIR: "/var/cache/msb", MSB_ROOTFS_CACHE: "0" });
    expect(c.cacheDir).toBe("/var/cache/msb");
    expect(c.rootfsCache).toBe(false);
    expect(loadConfig({ MSB_ROOTFS_CACHE: "1" }).rootfsCache).toBe(true);
    expect(() => loadConfig({ MSB_ROOTFS_CACHE: "no" })).toThrow(
      expect.objectContaining({ code: "CONFIG_INVALID" }) as Error,
    );
  });

  it("refuses bad values with CONFIG_INVALID", () => {
    expect(() => loadConfig({ MSB_IMAGE_SERVICE_ADDR: "nowhere" })).toThrow(
      expect.objectContaining({
        code: "CONFIG_INVALID",
        message: expect.stringContaining("MSB_IMAGE_SERVICE_ADDR") as unknown,
      }) as Error,
    );
    expect(() => loadConfig({ MSB_REGISTRY_AUTH: "user:pass" })).toThrow(
      expect.objectContaining({ code: "CONFIG_INVALID" }) as Error,
    );
  });
});
