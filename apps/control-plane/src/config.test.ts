import { describe, expect, it } from "vitest";
import { isLoopbackHost, loadConfig } from "./config.js";

describe("loadConfig", () => {
  it("defaults to loopback:5555, auth on, no volume roots, ports 10000-65535", () => {
    const c = loadConfig({}, { homeDir: "/home/u" });
    expect(c).toMatchObject({
      msbHome: "/home/u/.msb",
      host: "127.0.0.1",
      port: 5555,
      dev: false,
      imageServiceAddr: "unix:/home/u/.msb/run/image-service.sock",
      vmmAgentAddr: "unix:/home/u/.msb/run/vmm-agent.sock",
      serverKey: undefined,
    });
    expect(c.policy).toMatchObject({
      volumeRoots: [],
      volumeDenied: ["/home/u/.msb", "/home/u/.cache/msb"],
      portRange: { min: 10000, max: 65535 },
      portsDenied: [5555],
      allowNetworkAny: false,
    });
    expect(c.limits.bodyLimitBytes).toBe(10 * 1024 * 1024);
  });

  it("lets a developer mount from home and /tmp in dev mode", () => {
    const c = loadConfig({ MSB_DEV: "1" }, { homeDir: "/home/u" });
    expect(c.policy.volumeRoots).toEqual(["/home/u", "/tmp"]);
    expect(c.policy.allowNetworkAny).toBe(true);
  });

  it("reads explicit settings", () => {
    const c = loadConfig(
      {
        MSB_HOME: "/var/lib/msb",
        MSB_PORT: "8080",
        MSB_VOLUME_ROOTS: "/srv/a:/srv/b/",
        MSB_PORT_RANGE: "20000-20100",
        MSB_SERVER_KEY: "mySecretKey123",
      },
      { homeDir: "/home/u" },
    );
    expect(c.policy.volumeRoots).toEqual(["/srv/a", "/srv/b"]);
    expect(c.policy.portRange).toEqual({ min: 20000, max: 20100 });
    expect(c.serverKey).toMatch(/^[0-9a-f]{64}$/);
  });

  it.each([
    [{ MSB_PORT: "http" }, /MSB_PORT must be a whole number/],
    [{ MSB_PORT_RANGE: "9-1" }, /MSB_PORT_RANGE/],
    [{ MSB_VOLUME_ROOTS: "relative/dir" }, /not an absolute path/],
    [{ MSB_DEV: "maybe" }, /MSB_DEV/],
  ])("names the bad variable in %j", (env, message) => {
    expect(() => loadConfig(env, { homeDir: "/h" })).toThrow(message);
  });

  it("knows loopback hosts", () => {
    expect(["127.0.0.1", "localhost", "::1", "127.1.2.3"].every(isLoopbackHost)).toBe(true);
    expect(["0.0.0.0", "10.0.0.1", "::"].some(isLoopbackHost)).toBe(false);
  });
});
