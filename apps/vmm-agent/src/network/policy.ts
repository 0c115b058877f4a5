import { execFile } from "node:child_process";
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { promisify } from "node:util";
import type { Logger } from "@msb/runtime";

const run = promisify(execFile);

/** Whether the host firewall enforces the `public` network policy, and why not when it does not. */
export interface NetworkPolicyStatus {
  readonly enforced: boolean;
  /** Empty when enforced; otherwise the reason, for host info and logs. */
  readonly note: string;
}

/**
 * Destinations a `public` VM must not reach (besides the host's own addresses, matched with
 * `addrtype LOCAL`): everything that is not the public internet. slirp maps the guest's
 * 10.0.2.2 to the host's 127.0.0.1, so the loopback entry is what keeps the guest off host
 * services. IPv4-mapped, NAT64, 6to4 and Teredo IPv6 prefixes can carry a private IPv4
 * address, so they are closed too.
 */
export const PRIVATE_V4: readonly string[] = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.0.2.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15",
  "198.51.100.0/24",
  "203.0.113.0/24",
  "224.0.0.0/4",
  "240.0.0.0/4",
];

export const PRIVATE_V6: readonly string[] = [
  "::/128",
  "::1/128",
  "::ffff:0:0/96",
  "64:ff9b::/96",
  "64:ff9b:1::/48",
  "100::/64",
  "2001::/32",
  "2001:db8::/32",
  "2002::/16",
  "fc00::/7",
  "fe80::/10",
  "fec0::/10",
  "ff00::/8",
];

/** The `nameserver` addresses of a resolv.conf, split by family (zone ids dropped). */
export function parseResolvers(resolvConf: string): { v4: string[]; v6: string[] } {
  const v4: string[] = [];
  const v6: string[] = [];
  for (const line of resolvConf.split("\n")) {
    const match = /^\s*nameserver\s+(\S+)/.exec(line);
    const address = match?.[1]?.split("%")[0];
    if (address === undefined) continue;
    if (isIP(address) === 4 && !v4.includes(address)) v4.push(address);
    if (isIP(address) === 6 && !v6.includes(address)) v6.push(address);
  }
  return { v4, v6 };
}

/** The chain of one vmm-agent's `public` rules; keyed by the gid so agents on other gids never meet. */
export function chainName(publicGid: number): string {
  return `MSB-PUB-${publicGid}`;
}

/**
 * The rules of the `public` chain for one address family (pure; unit-tested). Order matters:
 * replies of connections that already exist pass first (hostfwd: a host client connected to
 * QEMU's listener on 127.0.0.1, and QEMU answers it), then DNS to the host's resolvers (often
 * a private or loopback address), then every non-public destination is rejected, so the
 * guest sees "connection refused" at once instead of a timeout.
 */
export function publicChainRules(family: 4 | 6, resolvers: readonly string[]): string[][] {
  const rules: string[][] = [
    ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "ACCEPT"],
  ];
  for (const resolver of resolvers) {
    const host = `${resolver}/${family === 4 ? 32 : 128}`;
    for (const proto of ["udp", "tcp"]) {
      rules.push(["-d", host, "-p", proto, "--dport", "53", "-j", "ACCEPT"]);
    }
  }
  rules.push(["-m", "addrtype", "--dst-type", "LOCAL", "-j", "REJECT"]);
  for (const net of family === 4 ? PRIVATE_V4 : PRIVATE_V6) rules.push(["-d", net, "-j", "REJECT"]);
  return rules;
}

/** The OUTPUT rule that sends every socket of a `public` VM's QEMU through the chain. */
export function jumpRule(publicGid: number): string[] {
  return ["-m", "owner", "--gid-owner", String(publicGid), "-j", chainName(publicGid)];
}

export interface NetworkPolicy {
  readonly status: NetworkPolicyStatus;
  /** Removes the chain and its jump (vmm-agent shutdown); idempotent. */
  remove(): Promise<void>;
}

export interface InstallNetworkPolicyOptions {
  /** False when the vmm-agent is not root: QEMUs run as its user, their traffic is ours. */
  readonly privileged: boolean;
  readonly publicGid: number;
  readonly logger: Logger;
  /** Default /etc/resolv.conf. */
  readonly resolvConfPath?: string;
  /** Default `iptables` and `ip6tables` from PATH. */
  readonly binaries?: { readonly v4: string; readonly v6: string };
}

async function tables(binary: string, args: string[]): Promise<void> {
  await run(binary, ["-w", "5", ...args], { timeout: 30_000 });
}

async function removeFamily(binary: string, publicGid: number): Promise<void> {
  const chain = chainName(publicGid);
  // A jump may have been inserted twice by an earlier crash between check and insert.
  for (let i = 0; i < 10; i++) {
    const removed = await tables(binary, ["-D", "OUTPUT", ...jumpRule(publicGid)]).then(
      () => true,
      () => false,
    );
    if (!removed) break;
  }
  await tables(binary, ["-F", chain]).catch(() => undefined);
  await tables(binary, ["-X", chain]).catch(() => undefined);
}

async function installFamily(
  binary: string,
  family: 4 | 6,
  publicGid: number,
  resolvers: readonly string[],
): Promise<void> {
  const chain = chainName(publicGid);
  await tables(binary, ["-N", chain]).catch(() => undefined); // exists from an earlier run
  await tables(binary, ["-F", chain]);
  for (const rule of publicChainRules(family, resolvers))
    await tables(binary, ["-A", chain, ...rule]);
  const present = await tables(binary, ["-C", "OUTPUT", ...jumpRule(publicGid)]).then(
    () => true,
    () => false,
  );
  if (!present) await tables(binary, ["-I", "OUTPUT", "1", ...jumpRule(publicGid)]);
}

function describe(err: unknown): string {
  const e = err as NodeJS.ErrnoException & { stderr?: string };
  if (e.code === "ENOENT") return "iptables is not installed (Debian package iptables)";
  return (
    String(e.stderr ?? e.message)
      .trim()
      .split("\n")[0] ?? "unknown error"
  );
}

/**
 * Enforces the `public` network policy on the host (the guest is root and hostile, so only
 * the host can): slirp's sockets belong to the QEMU process, which runs with the `public`
 * gid, so iptables/ip6tables OUTPUT rules matching that gid (`-m owner --gid-owner`) reject
 * everything but the public internet and the host's DNS resolvers. Installed idempotently in
 * a chain of its own at start; never claims enforcement it does not have.
 */
export async function installNetworkPolicy(
  options: InstallNetworkPolicyOptions,
): Promise<NetworkPolicy> {
  const notEnforced = (note: string): NetworkPolicy => ({
    status: { enforced: false, note },
    remove: () => Promise.resolve(),
  });
  if (!options.privileged) {
    return notEnforced(
      "not enforced: the vmm-agent does not run as root, so QEMU runs as the server's user and its traffic cannot be told apart",
    );
  }
  const resolvConf = await readFile(options.resolvConfPath ?? "/etc/resolv.conf", "utf8").catch(
    () => "",
  );
  const resolvers = parseResolvers(resolvConf);
  const { v4, v6 } = options.binaries ?? { v4: "iptables", v6: "ip6tables" };
  const remove = async (): Promise<void> => {
    await removeFamily(v4, options.publicGid);
    await removeFamily(v6, options.publicGid);
  };
  try {
    await installFamily(v4, 4, options.publicGid, resolvers.v4);
  } catch (err) {
    await remove();
    return notEnforced(`not enforced: iptables failed: ${describe(err)}`);
  }
  try {
    await installFamily(v6, 6, options.publicGid, resolvers.v6);
  } catch (err) {
    await remove();
    return notEnforced(`not enforced: ip6tables failed: ${describe(err)}`);
  }
  options.logger.info(
    { chain: chainName(options.publicGid), resolvers },
    "network policy 'public' enforced by iptables",
  );
  return { status: { enforced: true, note: "" }, remove };
}
