import { realpathSync } from "node:fs";
import { isAbsolute, posix, resolve, sep } from "node:path";
import { MsbError } from "@msb/errors";
import type { PolicyConfig } from "../config.js";
import type { VmPort, VmVolume } from "./backends.js";
import type { SandboxConfig } from "./sandbox-config.js";
import type { SandboxRecord } from "./store.js";
import { invalidParams } from "./schemas.js";
import type { SandboxConfigInput } from "./schemas.js";

/** Host resources are the operator's: this decides what a caller may have. */
export interface SandboxPolicy {
  /**
   * Validates a requested configuration against the policy and returns it normalised.
   * Throws POLICY_DENIED (with the reason and what is allowed), INVALID_PARAMS for
   * malformed volume/port strings, FILE_NOT_FOUND for a volume source that does not exist.
   */
  check(input: SandboxConfigInput): SandboxConfig;
  /**
   * Checks a stored configuration again, as a new request (volumes resolved again, memory,
   * cpus, ports and network against today's policy): a start that reuses the stored config
   * must not skip the policy, since a volume's directory may since have been swapped for a
   * symlink and the operator may have tightened the policy. Same errors as `check`.
   */
  recheck(config: SandboxConfig): SandboxConfig;
  /**
   * Throws QUOTA_EXCEEDED when starting `name` with `config` would take the namespace beyond
   * its share of the host. `records` are the namespace's sandboxes as stored now; call it and
   * record the start without an await in between, so two starts cannot both pass.
   */
  checkQuota(name: string, config: SandboxConfig, records: readonly SandboxRecord[]): void;
  /** May a namespace-bound key make the server pull this (missing) image? */
  namespaceMayPull(reference: string): boolean;
  /** POLICY_DENIED for a missing image a namespace-bound key may not pull. */
  pullDenied(reference: string, cause: unknown): MsbError;
}

/**
 * The registry host of an image reference by Docker's rule: the first path component when it
 * contains `.` or `:` or is `localhost`, else Docker Hub.
 */
export function registryOf(reference: string): string {
  const slash = reference.indexOf("/");
  const first = slash === -1 ? "" : reference.slice(0, slash);
  return first.includes(".") || first.includes(":") || first === "localhost"
    ? first.toLowerCase()
    : "docker.io";
}

export interface SandboxPolicyDeps {
  /** Resolves symlinks; throws ENOENT for a missing path. Defaults to fs.realpathSync. */
  readonly realpath?: (path: string) => string;
}

export function createSandboxPolicy(
  policy: PolicyConfig,
  deps: SandboxPolicyDeps = {},
): SandboxPolicy {
  const realpath = deps.realpath ?? ((p: string) => realpathSync(p));
  const real = (p: string): string => {
    try {
      return realpath(p);
    } catch {
      return p;
    }
  };

  const checkVolume = (spec: string, index: number): VmVolume => {
    const field = `config.volumes[${index}]`;
    const parts = spec.split(":");
    const mode = parts.length === 3 ? parts[2] : "rw";
    if (parts.length < 2 || parts.length > 3 || (mode !== "ro" && mode !== "rw")) {
      throw invalidParams([{ field, message: 'must look like "host:guest" or "host:guest:ro"' }]);
    }
    const [host, guest] = parts as [string, string];
    if (!isAbsolute(host)) {
      throw invalidParams([
        { field, message: `host path '${host}' must be absolute (resolve it on the client)` },
      ]);
    }
    const guestPath = posix.normalize(guest);
    if (!guest.startsWith("/") || guestPath === "/" || guest.split("/").includes("..")) {
      throw invalidParams([
        {
          field,
          message: `guest path '${guest}' must be an absolute path other than / without '..'`,
        },
      ]);
    }
    // Denied directories by name and resolved (MSB_HOME may itself be reached through a link).
    const denied = [...policy.volumeDenied, ...policy.volumeDenied.map(real)];
    const allowed = (path: string, roots: readonly string[]) =>
      roots.some((root) => isWithin(path, root)) &&
      !denied.some((d) => isWithin(path, d) || isWithin(d, path));
    const lexical = resolve(host);
    const roots = policy.volumeRoots;
    if (!allowed(lexical, roots)) throw volumeDenied(field, host, roots);
    let target: string;
    try {
      target = realpath(lexical);
    } catch {
      throw new MsbError(
        "FILE_NOT_FOUND",
        `Volume source ${host} (${field}) does not exist on the server. Create it first or fix the path.`,
        { details: { field, path: host } },
      );
    }
    const realRoots = roots.map(real);
    if (!allowed(target, realRoots) && !allowed(target, roots)) {
      throw volumeDenied(field, `${host} (which resolves to ${target})`, roots);
    }
    return { hostPath: target, guestPath, readOnly: mode === "ro" };
  };

  const volumeDenied = (field: string, what: string, roots: readonly string[]): MsbError => {
    const allowedText =
      roots.length === 0
        ? "This server allows no volume mounts (the operator can set MSB_VOLUME_ROOTS)."
        : `Allowed roots: ${roots.join(", ")} (never the server's MSB_HOME or MSB_CACHE_DIR, nor a directory that contains them).`;
    return new MsbError("POLICY_DENIED", `Volume ${what} is not allowed: ${allowedText}`, {
      details: { field, volumeRoots: roots },
    });
  };

  const checkPort = (spec: string, index: number): VmPort => {
    const field = `config.ports[${index}]`;
    const m = /^(\d{1,5}):(\d{1,5})(?:\/(tcp|udp))?$/.exec(spec);
    const hostPort = Number(m?.[1]);
    const guestPort = Number(m?.[2]);
    if (m === null || hostPort < 1 || hostPort > 65535 || guestPort < 1 || guestPort > 65535) {
      throw invalidParams([
        { field, message: 'must look like "host:guest" (ports 1-65535), optionally "/udp"' },
      ]);
    }
    const { min, max } = policy.portRange;
    if (hostPort < min || hostPort > max || policy.portsDenied.includes(hostPort)) {
      const reserved =
        policy.portsDenied.length > 0 ? ` except ${policy.portsDenied.join(", ")}` : "";
      throw new MsbError(
        "POLICY_DENIED",
        `Host port ${hostPort} (${field}) is not allowed: forwards may use host ports ${min}-${max}${reserved}.`,
        { details: { field, portRange: policy.portRange } },
      );
    }
    return { hostPort, guestPort, protocol: m[3] === "udp" ? "udp" : "tcp" };
  };

  const check = (input: SandboxConfigInput): SandboxConfig => {
    if (input.memory > policy.maxMemoryMib) {
      throw new MsbError(
        "POLICY_DENIED",
        `config.memory ${input.memory} MiB is more than this server allows (${policy.maxMemoryMib} MiB).`,
        { details: { field: "config.memory", maxMemoryMib: policy.maxMemoryMib } },
      );
    }
    if (input.cpus > policy.maxCpus) {
      throw new MsbError(
        "POLICY_DENIED",
        `config.cpus ${input.cpus} is more than this server allows (${policy.maxCpus}).`,
        { details: { field: "config.cpus", maxCpus: policy.maxCpus } },
      );
    }
    if (input.network === "any" && !policy.allowNetworkAny) {
      throw new MsbError(
        "POLICY_DENIED",
        `config.network "any" (guest may reach the host and private networks) is disabled on this server; use "public" or "none", or ask the operator to set MSB_ALLOW_NETWORK_ANY=1.`,
        { details: { field: "config.network" } },
      );
    }
    const volumes = input.volumes.map(checkVolume);
    const ports = input.ports.map(checkPort);
    const seen = new Set<string>();
    ports.forEach((p, i) => {
      const key = `${p.hostPort}/${p.protocol}`;
      if (seen.has(key)) {
        throw invalidParams([
          { field: `config.ports[${i}]`, message: `host port ${key} is listed twice` },
        ]);
      }
      seen.add(key);
    });
    return {
      image: input.image,
      memoryMib: input.memory,
      cpus: input.cpus,
      envs: input.envs,
      workdir: input.workdir ?? null,
      volumes,
      ports,
      network: input.network,
      scripts: input.scripts ?? {},
      exec: input.exec ?? null,
    };
  };

  const quotaExceeded = (
    namespace: string,
    quota: "vms" | "memory" | "sandboxes",
    limit: number,
    used: number,
    what: string,
    variable: string,
  ): MsbError =>
    new MsbError(
      "QUOTA_EXCEEDED",
      `Namespace '${namespace}' has reached its quota of ${what} (${used} of ${limit}, ${variable}). Stop sandboxes it does not need (sandbox.stop; remove: true also frees a kept sandbox), or ask the operator to raise ${variable}.`,
      { details: { namespace, quota, limit, used } },
    );

  const checkQuota = (
    name: string,
    config: SandboxConfig,
    records: readonly SandboxRecord[],
  ): void => {
    const others = records.filter((r) => r.name !== name);
    const namespace = records[0]?.namespace ?? "";
    const live = others.filter((r) => r.state !== "stopped" && r.state !== "failed");
    if (live.length + 1 > policy.namespaceMaxVms) {
      throw quotaExceeded(
        namespace,
        "vms",
        policy.namespaceMaxVms,
        live.length,
        "running sandboxes",
        "MSB_NAMESPACE_MAX_VMS",
      );
    }
    const memory = live.reduce((sum, r) => sum + r.config.memoryMib, 0);
    if (memory + config.memoryMib > policy.namespaceMaxMemoryMib) {
      throw quotaExceeded(
        namespace,
        "memory",
        policy.namespaceMaxMemoryMib,
        memory,
        `memory in MiB (this start asks for ${config.memoryMib})`,
        "MSB_NAMESPACE_MAX_MEMORY_MIB",
      );
    }
    if (others.length === records.length && others.length + 1 > policy.namespaceMaxSandboxes) {
      throw quotaExceeded(
        namespace,
        "sandboxes",
        policy.namespaceMaxSandboxes,
        others.length,
        "sandboxes kept (stopped ones keep their disks)",
        "MSB_NAMESPACE_MAX_SANDBOXES",
      );
    }
  };

  return {
    check,
    checkQuota,
    namespaceMayPull: (reference) =>
      policy.namespacePullRegistries.includes(registryOf(reference.trim())),
    pullDenied: (reference, cause) => {
      const registry = registryOf(reference.trim());
      const allowed = policy.namespacePullRegistries;
      return new MsbError(
        "POLICY_DENIED",
        `Image ${reference} is not on this server, and a key bound to a namespace may only pull from ${allowed.length === 0 ? "no registry" : allowed.join(", ")} (MSB_NAMESPACE_PULL_REGISTRIES), not from ${registry}. Ask the operator to pull it ('msb pull ${reference}'), or use an image from an allowed registry.`,
        { details: { field: "config.image", registry, allowedRegistries: allowed }, cause },
      );
    },
    recheck: (config) =>
      check({
        image: config.image,
        memory: config.memoryMib,
        cpus: config.cpus,
        envs: [...config.envs],
        ...(config.workdir === null ? {} : { workdir: config.workdir }),
        volumes: config.volumes.map(
          (v) => `${v.hostPath}:${v.guestPath}${v.readOnly ? ":ro" : ""}`,
        ),
        ports: config.ports.map(
          (p) => `${p.hostPort}:${p.guestPort}${p.protocol === "udp" ? "/udp" : ""}`,
        ),
        network: config.network,
        scripts: { ...config.scripts },
        ...(config.exec === null ? {} : { exec: config.exec }),
      }),
  };
}

function isWithin(path: string, root: string): boolean {
  if (root === sep) return path.startsWith(sep);
  return path === root || path.startsWith(root + sep);
}
