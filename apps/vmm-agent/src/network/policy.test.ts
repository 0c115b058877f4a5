import { describe, expect, it } from "vitest";
import { chainName, jumpRule, parseResolvers, publicChainRules } from "./policy.js";

describe("parseResolvers", () => {
  it("reads nameserver lines by family, once each, without zone ids", () => {
    const conf = [
      "# comment",
      "search example.org",
      "nameserver 10.255.255.53",
      "nameserver fe80::1%eth0",
      "nameserver 10.255.255.53",
      "  nameserver 2001:4860:4860::8888",
      "nameserver not-an-ip",
    ].join("\n");
    expect(parseResolvers(conf)).toEqual({
      v4: ["10.255.255.53"],
      v6: ["fe80::1", "2001:4860:4860::8888"],
    });
  });
});

describe("publicChainRules", () => {
  it("lets replies through first, then DNS to the resolvers, then rejects the rest", () => {
    const rules = publicChainRules(4, ["10.255.255.53"]).map((r) => r.join(" "));
    expect(rules[0]).toBe("-m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT");
    expect(rules.slice(1, 3)).toEqual([
      "-d 10.255.255.53/32 -p udp --dport 53 -j ACCEPT",
      "-d 10.255.255.53/32 -p tcp --dport 53 -j ACCEPT",
    ]);
    expect(rules[3]).toBe("-m addrtype --dst-type LOCAL -j REJECT");
    for (const net of ["127.0.0.0/8", "10.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10"]) {
      expect(rules).toContain(`-d ${net} -j REJECT`);
    }
    // Nothing after the resolvers accepts anything.
    expect(rules.slice(3).every((r) => r.endsWith("-j REJECT"))).toBe(true);
  });

  it("closes IPv6 loopback, link-local, ULA and prefixes that embed IPv4", () => {
    const rules = publicChainRules(6, []).map((r) => r.join(" "));
    for (const net of ["::1/128", "fe80::/10", "fc00::/7", "::ffff:0:0/96", "64:ff9b::/96"]) {
      expect(rules).toContain(`-d ${net} -j REJECT`);
    }
  });

  it("sends only the public gid's sockets through a chain named after it", () => {
    expect(chainName(1_900_000_001)).toBe("MSB-PUB-1900000001");
    expect(chainName(1_900_000_001).length).toBeLessThanOrEqual(28);
    expect(jumpRule(1_900_000_001).join(" ")).toBe(
      "-m owner --gid-owner 1900000001 -j MSB-PUB-1900000001",
    );
  });
});
