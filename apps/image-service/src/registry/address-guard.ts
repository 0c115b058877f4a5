import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import { BlockList, isIP, type LookupFunction } from "node:net";
import { networkInterfaces } from "node:os";

// Which addresses the image service may connect to on a tenant's behalf. A reference names a
// registry and the registry names redirect and token URLs, so every connection is checked on
// the address it is actually made to (the resolved one: no DNS rebinding between check and
// connect). Loopback, link-local, private, CGNAT, ULA, multicast, reserved and this host's own
// addresses are "non-public": only hosts the operator listed may have them.

const NON_PUBLIC_V4: readonly [string, number][] = [
  ["0.0.0.0", 8], // "this network"
  ["10.0.0.0", 8],
  ["100.64.0.0", 10], // CGNAT
  ["127.0.0.0", 8],
  ["169.254.0.0", 16], // link-local, cloud metadata
  ["172.16.0.0", 12],
  ["192.0.0.0", 24],
  ["192.0.2.0", 24],
  ["192.168.0.0", 16],
  ["198.18.0.0", 15],
  ["198.51.100.0", 24],
  ["203.0.113.0", 24],
  ["224.0.0.0", 4], // multicast
  ["240.0.0.0", 4], // reserved, broadcast
];
const NON_PUBLIC_V6: readonly [string, number][] = [
  ["::", 128],
  ["::1", 128],
  ["100::", 64], // discard
  ["2001:db8::", 32], // documentation
  ["fc00::", 7], // ULA
  ["fe80::", 10], // link-local
  ["fec0::", 10], // site-local (deprecated)
  ["ff00::", 8], // multicast
];

const blockList = new BlockList();
for (const [net, prefix] of NON_PUBLIC_V4) blockList.addSubnet(net, prefix, "ipv4");
for (const [net, prefix] of NON_PUBLIC_V6) blockList.addSubnet(net, prefix, "ipv6");

/** The IPv4 address inside an IPv4-mapped (`::ffff:a.b.c.d`) or NAT64 (`64:ff9b::/96`) one. */
function embeddedV4(address: string): string | undefined {
  const lower = address.toLowerCase();
  const m = /^(?:::ffff:|64:ff9b::)(?:(\d+\.\d+\.\d+\.\d+)|([0-9a-f]{1,4}):([0-9a-f]{1,4}))$/.exec(
    lower,
  );
  if (m === null) return undefined;
  if (m[1] !== undefined) return m[1];
  const hi = parseInt(m[2] ?? "0", 16);
  const lo = parseInt(m[3] ?? "0", 16);
  return [hi >> 8, hi & 255, lo >> 8, lo & 255].join(".");
}

function ownAddresses(): Set<string> {
  const own = new Set<string>();
  for (const list of Object.values(networkInterfaces())) {
    for (const info of list ?? []) own.add(info.address.toLowerCase().replace(/%.*$/, ""));
  }
  return own;
}

/**
 * Whether `address` (an IP literal, brackets allowed) is one a tenant must not reach through
 * the image service: true for non-public ranges and for this host's own addresses (a public
 * address of the host still reaches its loopback-only services' public twins).
 */
export function isNonPublicAddress(address: string): boolean {
  const bare = address.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  const family = isIP(bare);
  if (family === 0) return true;
  const v4 = family === 6 ? embeddedV4(bare) : bare;
  if (v4 !== undefined) {
    return blockList.check(v4, "ipv4") || ownAddresses().has(v4);
  }
  return blockList.check(bare, "ipv6") || ownAddresses().has(bare.toLowerCase());
}

/** Thrown (through the socket) when a connection would go to a non-public address. */
export class ForbiddenAddressError extends Error {
  override readonly name = "ForbiddenAddressError";
  readonly code = "EMSB_FORBIDDEN_ADDRESS";
  /** `host` is the URL's hostname (no port; IPv6 in brackets). */
  constructor(readonly host: string) {
    super(`${host} resolves to a non-public address`);
  }
}

/** `dns.lookup` with `all: true`: the seam tests use to play DNS. */
export type Resolver = (
  hostname: string,
  family: number,
  callback: (err: Error | null, addresses: LookupAddress[]) => void,
) => void;

const systemResolver: Resolver = (hostname, family, callback) =>
  dnsLookup(hostname, { all: true, family }, callback);

/**
 * A `lookup` for http.request that resolves `hostname`, refuses it when any address is
 * non-public (unless `allowNonPublic`), and hands the checked addresses to the socket, which
 * connects to exactly those.
 */
export function guardedLookup(allowNonPublic: boolean, resolver = systemResolver): LookupFunction {
  return (hostname, options, callback) => {
    const family = options.family === "IPv4" ? 4 : options.family === "IPv6" ? 6 : options.family;
    resolver(hostname, family ?? 0, (err, addresses) => {
      const cb = callback;
      if (err !== null) return cb(err, []);
      if (addresses.length === 0) return cb(new Error(`${hostname} has no address`), []);
      if (!allowNonPublic && addresses.some((a) => isNonPublicAddress(a.address))) {
        return cb(new ForbiddenAddressError(hostname), []);
      }
      if (options.all === true) return cb(null, addresses);
      const first = addresses[0] as LookupAddress;
      return cb(null, first.address, first.family);
    });
  };
}

/**
 * Checks a URL's host before connecting: IP literals here (the socket does not look them
 * up), names through {@link guardedLookup} at connect time.
 */
export function assertHostAllowed(url: URL, allowNonPublic: boolean): void {
  const host = url.hostname.replace(/^\[|\]$/g, "");
  if (!allowNonPublic && isIP(host) !== 0 && isNonPublicAddress(host)) {
    throw new ForbiddenAddressError(url.hostname);
  }
}
