import { MsbError } from "@msb/errors";
import { DOCKER_HUB } from "../reference.js";

/** `MSB_REGISTRIES` when unset: the big public registries, nothing on the host's network. */
export const DEFAULT_REGISTRIES: readonly string[] = ["docker.io", "ghcr.io", "quay.io"];

/** Docker Hub's API and its aliases in references: listing `docker.io` lists them. */
const DOCKER_HUB_HOSTS = ["index.docker.io", "registry-1.docker.io"];

/**
 * Which registries the image service talks to. Only registries the operator configured are
 * contacted at all (`MSB_REGISTRIES`, plus `MSB_INSECURE_REGISTRIES`, which are listed too).
 * A listed `host[:port]` may resolve to loopback or private addresses; everything else a
 * connection goes to (redirects, token servers, registries allowed by `*`) must be public.
 */
export interface RegistryPolicy {
  /** The configured entries, for messages and the gRPC answer. */
  readonly entries: readonly string[];
  /** True when references naming `registry` may be pulled from (or pushed to). */
  isAllowed(registry: string): boolean;
  /** True when `host` (`host[:port]` as in a URL) was listed by name: it may be non-public. */
  isListed(host: string): boolean;
  /** True when `registry` is reached over plain HTTP. */
  isPlainHttp(registry: string): boolean;
  /** POLICY_DENIED for `registry` unless it is allowed. */
  assertAllowed(registry: string): void;
}

export interface RegistryPolicyOptions {
  /** `MSB_REGISTRIES` entries (`host[:port]` or `*` for any registry with public addresses). */
  readonly registries: readonly string[];
  /** `MSB_INSECURE_REGISTRIES` entries: listed, and reached over plain HTTP. */
  readonly insecureRegistries: readonly string[];
}

function hostOf(hostPort: string): string {
  if (hostPort.startsWith("[")) return hostPort.slice(0, hostPort.indexOf("]") + 1);
  return hostPort.split(":")[0] ?? hostPort;
}

function isLoopbackName(hostPort: string): boolean {
  const host = hostOf(hostPort);
  return host === "localhost" || host === "[::1]" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** `host`, `host:443` and `host:80` name the same registry entry when the entry has no port. */
function variants(hostPort: string): string[] {
  const lower = hostPort.toLowerCase();
  if (lower !== hostOf(lower)) return [lower];
  return [lower, `${lower}:443`, `${lower}:80`];
}

export function createRegistryPolicy(options: RegistryPolicyOptions): RegistryPolicy {
  const clean = (list: readonly string[]) =>
    list.map((r) => r.trim().toLowerCase()).filter((r) => r !== "");
  const insecure = clean(options.insecureRegistries);
  const configured = clean(options.registries);
  const any = configured.includes("*");
  const entries = [...new Set([...configured.filter((r) => r !== "*"), ...insecure])];
  const listed = new Set(entries.flatMap(variants));
  if (listed.has(DOCKER_HUB)) for (const h of DOCKER_HUB_HOSTS) listed.add(h);
  const plain = new Set(insecure.flatMap(variants));

  const isListed = (host: string): boolean => listed.has(host.toLowerCase());
  const isAllowed = (registry: string): boolean => any || isListed(registry);
  return {
    entries: any ? ["*", ...entries] : entries,
    isAllowed,
    isListed,
    isPlainHttp: (registry) =>
      registry !== DOCKER_HUB &&
      (plain.has(registry.toLowerCase()) ||
        plain.has(hostOf(registry).toLowerCase()) ||
        (isLoopbackName(registry) && isListed(registry))),
    assertAllowed(registry) {
      if (isAllowed(registry)) return;
      throw new MsbError(
        "POLICY_DENIED",
        `Registry ${registry} is not one this server contacts. Use an image from an allowed registry, or ask the operator to add ${registry} to MSB_REGISTRIES.`,
        { details: { registry } },
      );
    },
  };
}
