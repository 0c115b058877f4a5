import { describe, expect, it } from "vitest";
import type { PolicyConfig } from "../config.js";
import { createSandboxPolicy, registryOf } from "./policy.js";
import { sandboxConfigSchema } from "./schemas.js";

const base: PolicyConfig = {
  volumeRoots: ["/srv/data"],
  volumeDenied: ["/srv/data/.msb"],
  portRange: { min: 10000, max: 10100 },
  portsDenied: [10050],
  allowNetworkAny: false,
  maxMemoryMib: 4096,
  maxCpus: 4,
  namespacePullRegistries: ["docker.io", "localhost:5000"],
  namespaceMaxVms: 16,
  namespaceMaxMemoryMib: 8192,
  namespaceMaxSandboxes: 100,
};
// Paths "exist" and resolve to themselves, except a symlink that points outside.
const realpath = (p: string) => (p === "/srv/data/link" ? "/etc" : p);
const check = (config: object, policy: PolicyConfig = base) =>
  createSandboxPolicy(policy, { realpath }).check(
    sandboxConfigSchema.parse({ image: "python", ...config }),
  );
const codeOf = (fn: () => unknown): string => {
  try {
    fn();
  } catch (err) {
    return (err as { code: string }).code;
  }
  return "OK";
};

describe("sandbox policy", () => {
  it("normalises volumes and ports that the policy allows", () => {
    const config = check({ volumes: ["/srv/data/a:/work:ro"], ports: ["10001:80/udp"] });
    expect(config.volumes).toEqual([
      { hostPath: "/srv/data/a", guestPath: "/work", readOnly: true },
    ]);
    expect(config.ports).toEqual([{ hostPort: 10001, guestPort: 80, protocol: "udp" }]);
    expect(config).toMatchObject({ memoryMib: 512, cpus: 1, network: "public", workdir: null });
  });

  it.each([
    ["/etc:/x", "POLICY_DENIED"],
    ["/srv/database:/x", "POLICY_DENIED"],
    ["/srv/data/../../etc:/x", "POLICY_DENIED"],
    ["/srv/data/link:/x", "POLICY_DENIED"],
    ["/srv/data/.msb/server.key:/x", "POLICY_DENIED"],
    ["/srv:/x", "POLICY_DENIED"],
    ["data:/x", "INVALID_PARAMS"],
    ["/srv/data/a:relative", "INVALID_PARAMS"],
    ["/srv/data/a:/", "INVALID_PARAMS"],
    ["/srv/data/a:/x/../y", "INVALID_PARAMS"],
    ["/srv/data/a", "INVALID_PARAMS"],
    ["/srv/data/a:/x:rwx", "INVALID_PARAMS"],
  ])("volume %s → %s", (volume, code) => {
    expect(codeOf(() => check({ volumes: [volume] }))).toBe(code);
  });

  it("allows no volume at all when no roots are configured", () => {
    expect(codeOf(() => check({ volumes: ["/srv/data/a:/x"] }, { ...base, volumeRoots: [] }))).toBe(
      "POLICY_DENIED",
    );
  });

  it.each([
    ["9999:80", "POLICY_DENIED"],
    ["10101:80", "POLICY_DENIED"],
    ["10050:80", "POLICY_DENIED"],
    ["10001:0", "INVALID_PARAMS"],
    ["80", "INVALID_PARAMS"],
    ["10001:80/sctp", "INVALID_PARAMS"],
  ])("port %s → %s", (port, code) => {
    expect(codeOf(() => check({ ports: [port] }))).toBe(code);
  });

  it("refuses a host port listed twice", () => {
    expect(codeOf(() => check({ ports: ["10001:80", "10001:81"] }))).toBe("INVALID_PARAMS");
  });

  it("caps memory and cpus, and network any unless allowed", () => {
    expect(codeOf(() => check({ memory: 8192 }))).toBe("POLICY_DENIED");
    expect(codeOf(() => check({ cpus: 8 }))).toBe("POLICY_DENIED");
    expect(codeOf(() => check({ network: "any" }))).toBe("POLICY_DENIED");
    expect(check({ network: "any" }, { ...base, allowNetworkAny: true }).network).toBe("any");
  });
});

describe("registries a namespace key may pull from", () => {
  it.each([
    ["python", "docker.io"],
    ["python:3.12", "docker.io"],
    ["microsandbox/python", "docker.io"],
    ["ghcr.io/a/b:1", "ghcr.io"],
    ["LOCALHOST/a", "docker.io"],
    ["localhost/a", "localhost"],
    ["127.0.0.1:9/x/y", "127.0.0.1:9"],
    ["[::1]:5000/x", "[::1]:5000"],
  ])("%s is from %s", (reference, registry) => {
    expect(registryOf(reference)).toBe(registry);
  });

  it("allows only the configured registries", () => {
    const policy = createSandboxPolicy(base, { realpath });
    expect(policy.namespaceMayPull("python")).toBe(true);
    expect(policy.namespaceMayPull("localhost:5000/a/b")).toBe(true);
    expect(policy.namespaceMayPull("127.0.0.1:5000/a/b")).toBe(false);
    expect(policy.namespaceMayPull("169.254.169.254/latest")).toBe(false);
  });
});
