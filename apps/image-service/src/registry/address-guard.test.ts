import { networkInterfaces } from "node:os";
import { describe, expect, it } from "vitest";
import { guardedLookup, isNonPublicAddress, type Resolver } from "./address-guard.js";
import { createRegistryPolicy } from "./policy.js";

describe("isNonPublicAddress", () => {
  it.each([
    "127.0.0.1",
    "127.8.9.10",
    "0.0.0.0",
    "10.1.2.3",
    "100.64.0.1",
    "169.254.169.254",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "224.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "[::1]",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:a9fe:a9fe",
    "64:ff9b::a9fe:a9fe",
    "not an address",
  ])("refuses %s", (address) => {
    expect(isNonPublicAddress(address)).toBe(true);
  });

  it.each(["1.1.1.1", "8.8.8.8", "172.32.0.1", "2606:4700:4700::1111", "::ffff:8.8.8.8"])(
    "allows %s",
    (address) => {
      expect(isNonPublicAddress(address)).toBe(false);
    },
  );

  it("refuses the host's own addresses", () => {
    const own = Object.values(networkInterfaces())
      .flat()
      .map((i) => i?.address)
      .filter((a): a is string => a !== undefined);
    expect(own.length).toBeGreaterThan(0);
    for (const address of own) expect(isNonPublicAddress(address), address).toBe(true);
  });
});

describe("guardedLookup (DNS rebinding: the checked address is the one connected to)", () => {
  const lookup = (allow: boolean, answers: string[]) => {
    const resolver: Resolver = (_host, _family, cb) =>
      cb(
        null,
        answers.map((address) => ({ address, family: address.includes(":") ? 6 : 4 })),
      );
    return new Promise<{ err: Error | null; addresses: unknown }>((resolve) =>
      guardedLookup(allow, resolver)("registry.example", { all: true }, (err, addresses) =>
        resolve({ err, addresses }),
      ),
    );
  };

  it("refuses a name with any non-public address unless it was listed", async () => {
    expect((await lookup(false, ["8.8.8.8", "169.254.169.254"])).err).toMatchObject({
      code: "EMSB_FORBIDDEN_ADDRESS",
    });
    expect((await lookup(true, ["127.0.0.1"])).addresses).toEqual([
      { address: "127.0.0.1", family: 4 },
    ]);
  });

  it("hands exactly the checked public addresses to the socket", async () => {
    const { err, addresses } = await lookup(false, ["8.8.8.8"]);
    expect(err).toBeNull();
    expect(addresses).toEqual([{ address: "8.8.8.8", family: 4 }]);
  });
});

describe("createRegistryPolicy", () => {
  const policy = createRegistryPolicy({
    registries: ["docker.io", "127.0.0.1:5000"],
    insecureRegistries: ["reg.lan:8080"],
  });

  it("allows listed registries only, naming MSB_REGISTRIES otherwise", () => {
    expect(policy.isAllowed("docker.io")).toBe(true);
    expect(policy.isAllowed("127.0.0.1:5000")).toBe(true);
    expect(policy.isAllowed("reg.lan:8080")).toBe(true);
    expect(policy.isAllowed("127.0.0.1:5001")).toBe(false);
    expect(policy.isAllowed("ghcr.io")).toBe(false);
    expect(() => policy.assertAllowed("127.0.0.1:22")).toThrow(
      expect.objectContaining({
        code: "POLICY_DENIED",
        message: expect.stringContaining("MSB_REGISTRIES") as unknown,
      }) as Error,
    );
  });

  it("lists docker.io's API host, and uses plain HTTP for listed loopback and insecure registries", () => {
    expect(policy.isListed("registry-1.docker.io")).toBe(true);
    expect(policy.isPlainHttp("127.0.0.1:5000")).toBe(true);
    expect(policy.isPlainHttp("reg.lan:8080")).toBe(true);
    expect(policy.isPlainHttp("docker.io")).toBe(false);
  });

  it("'*' allows any registry but lists none (non-public addresses stay refused)", () => {
    const any = createRegistryPolicy({ registries: ["*"], insecureRegistries: [] });
    expect(any.isAllowed("registry.example.com")).toBe(true);
    expect(any.isListed("registry.example.com")).toBe(false);
    expect(any.isListed("127.0.0.1:5000")).toBe(false);
  });
});
