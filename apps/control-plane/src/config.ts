import { homedir, totalmem } from "node:os";
import { isAbsolute, join, resolve } from "node:path";
import { MsbError } from "@msb/errors";
import { deriveServerSecret } from "@msb/keys";
import { z } from "zod";

/** Every setting of the control plane, with units in the names. Built by `loadConfig`. */
export interface ControlPlaneConfig {
  readonly msbHome: string;
  readonly host: string;
  readonly port: number;
  /** No authentication; volume roots default to the user's home and /tmp. */
  readonly dev: boolean;
  /**
   * Browser origins (`scheme://host[:port]`) whose pages may call the API
   * (`MSB_ALLOWED_ORIGINS`, comma-separated; default none). Any other `Origin` is refused.
   */
  readonly allowedOrigins: readonly string[];
  /** Host names the server answers (`MSB_ALLOWED_HOSTS`, comma-separated; default: loopback names on a loopback bind, any otherwise). */
  readonly allowedHosts: readonly string[];
  readonly imageServiceAddr: string;
  readonly vmmAgentAddr: string;
  /**
   * Server secret from `MSB_SERVER_KEY` (alias `MSB_SERVER_SECRET`; `msb server start --key`),
   * derived like the CLI does (`deriveServerSecret`); undefined: use `$MSB_HOME/server.key`.
   */
  readonly serverKey: string | undefined;
  readonly policy: PolicyConfig;
  readonly limits: LimitsConfig;
  readonly timeouts: TimeoutsConfig;
  /** Slow-client limits of the HTTP server (receiving a request only; streams are not cut). */
  readonly http: {
    readonly headersTimeoutMs: number;
    readonly requestTimeoutMs: number;
    readonly keepAliveTimeoutMs: number;
  };
}

export interface PolicyConfig {
  /** Host directories under which volume mounts are allowed (absolute, resolved). */
  readonly volumeRoots: readonly string[];
  /**
   * Host directories never mountable, even under a root: MSB_HOME (secret, database, other
   * sandboxes) and MSB_CACHE_DIR (the kernel, agent and rootfs files every VM shares).
   */
  readonly volumeDenied: readonly string[];
  /**
   * Registries (`docker.io`, `ghcr.io`, `localhost:5000`) from which `sandbox.start` with a
   * namespace-bound key may pull a missing image (`MSB_NAMESPACE_PULL_REGISTRIES`, comma
   * separated, default `docker.io`). Such keys are denied `image.pull`; without this list a
   * start would make the server contact any registry (SSRF). All-namespaces keys pull as
   * `image.pull` does; the image service's own registry list applies to everyone.
   */
  readonly namespacePullRegistries: readonly string[];
  /** Running (or starting) VMs per namespace (`MSB_NAMESPACE_MAX_VMS`, default 16). */
  readonly namespaceMaxVms: number;
  /** Memory of those VMs per namespace (`MSB_NAMESPACE_MAX_MEMORY_MIB`, default half the host's). */
  readonly namespaceMaxMemoryMib: number;
  /** Sandboxes kept per namespace, stopped ones (with their disks) included (`MSB_NAMESPACE_MAX_SANDBOXES`, default 100). */
  readonly namespaceMaxSandboxes: number;
  /** Inclusive range of host ports a port forward may bind. */
  readonly portRange: { readonly min: number; readonly max: number };
  /** Host ports never forwarded (the server's own port). */
  readonly portsDenied: readonly number[];
  /** Whether `network: "any"` (guest may reach the host and private ranges) is allowed. */
  readonly allowNetworkAny: boolean;
  readonly maxMemoryMib: number;
  readonly maxCpus: number;
}

export interface LimitsConfig {
  /** Largest accepted HTTP body on /api/v1/rpc and /mcp. Default 10 MiB. */
  readonly bodyLimitBytes: number;
  /** Most requests in one JSON-RPC batch. Default 100. */
  readonly maxBatchSize: number;
  /** Output kept per repl.run / command.run (stdout + stderr); beyond it `truncated: true`. Default 1 MiB. */
  readonly outputLimitBytes: number;
  /**
   * Open MCP sessions on the server. Default 100. When full, a new session closes only an idle
   * (30 min) one or is refused with CAPACITY_EXHAUSTED: one key never closes another's.
   */
  readonly mcpMaxSessions: number;
  /** Open MCP sessions per key; beyond it that key's oldest is closed. Default 10. */
  readonly mcpMaxSessionsPerKey: number;
}

export interface TimeoutsConfig {
  /** `timeout` of repl.run / command.run when the caller gives none. Default 300 s. */
  readonly runDefaultMs: number;
  /** Largest `timeout` a caller may ask for. Default 3600 s. */
  readonly runMaxMs: number;
  /** Deadline of image-service PrepareRootfs (includes a pull). Default 30 min. */
  readonly prepareRootfsMs: number;
  /** Deadline of vmm-agent CreateVm (boot to READY). Default 180 s. */
  readonly createVmMs: number;
  /** Deadline of vmm-agent StopVm. Default 60 s. */
  readonly stopVmMs: number;
  /** Deadline of small calls (ListVms, GetVmMetrics, GetHostInfo, health probes). Default 5 s. */
  readonly probeMs: number;
  /**
   * Between two ListVms passes that mark sandboxes whose VM died as failed; bounds how long
   * the database may say `running` for a dead VM nobody calls. 0 disables. Default 2 s.
   */
  readonly reconcileIntervalMs: number;
}

const MIB = 1024 * 1024;

const boolFlag = z
  .enum(["0", "1", "true", "false", "yes", "no", ""])
  .optional()
  .transform((v) => v === "1" || v === "true" || v === "yes");

const int = (min: number, max: number) =>
  z.coerce
    .number({ invalid_type_error: "must be a whole number" })
    .int("must be a whole number")
    .min(min)
    .max(max);

const envSchema = z.object({
  MSB_HOME: z.string().min(1).optional(),
  MSB_CACHE_DIR: z.string().min(1).optional(),
  MSB_HOST: z.string().min(1).default("127.0.0.1"),
  MSB_PORT: int(0, 65535).default(5555),
  MSB_DEV: boolFlag,
  MSB_IMAGE_SERVICE_ADDR: z.string().min(1).optional(),
  MSB_VMM_AGENT_ADDR: z.string().min(1).optional(),
  MSB_SERVER_KEY: z.string().optional(),
  MSB_SERVER_SECRET: z.string().optional(),
  MSB_VOLUME_ROOTS: z.string().optional(),
  MSB_PORT_RANGE: z
    .string()
    .regex(/^\d{1,5}-\d{1,5}$/, "must look like 10000-65535")
    .default("10000-65535"),
  MSB_ALLOW_NETWORK_ANY: boolFlag,
  MSB_NAMESPACE_PULL_REGISTRIES: z.string().default("docker.io"),
  MSB_MAX_MEMORY_MIB: int(64, 1024 * 1024).default(16384),
  MSB_MAX_CPUS: int(1, 256).default(16),
  MSB_NAMESPACE_MAX_VMS: int(1, 100_000).default(16),
  MSB_NAMESPACE_MAX_MEMORY_MIB: int(64, 1024 * 1024 * 1024).optional(),
  MSB_NAMESPACE_MAX_SANDBOXES: int(1, 1_000_000).default(100),
  MSB_BODY_LIMIT_BYTES: int(1024, 1024 * MIB).default(10 * MIB),
  MSB_MAX_BATCH_SIZE: int(1, 10_000).default(100),
  MSB_OUTPUT_LIMIT_BYTES: int(1024, 256 * MIB).default(MIB),
  MSB_ALLOWED_ORIGINS: z
    .string()
    .regex(
      /^\s*(?:https?:\/\/[^\s,/]+\/?\s*(?:,\s*https?:\/\/[^\s,/]+\/?\s*)*)?$/i,
      "must be comma-separated origins like https://app.example.com",
    )
    .default(""),
  MSB_HTTP_HEADERS_TIMEOUT_MS: int(100, 600_000).default(10_000),
  MSB_HTTP_REQUEST_TIMEOUT_MS: int(100, 3_600_000).default(60_000),
  MSB_HTTP_KEEP_ALIVE_TIMEOUT_MS: int(100, 600_000).default(5_000),
  MSB_ALLOWED_HOSTS: z.string().default(""),
  MSB_MCP_MAX_SESSIONS: int(1, 100_000).default(100),
  MSB_MCP_MAX_SESSIONS_PER_KEY: int(1, 100_000).default(10),
  MSB_RUN_TIMEOUT_MS: int(1_000, 86_400_000).default(300_000),
  MSB_RUN_TIMEOUT_MAX_MS: int(1_000, 86_400_000).default(3_600_000),
  MSB_PREPARE_ROOTFS_TIMEOUT_MS: int(1_000, 86_400_000).default(1_800_000),
  MSB_CREATE_VM_TIMEOUT_MS: int(1_000, 3_600_000).default(180_000),
  MSB_STOP_VM_TIMEOUT_MS: int(1_000, 3_600_000).default(60_000),
  MSB_PROBE_TIMEOUT_MS: int(100, 600_000).default(5_000),
  MSB_RECONCILE_INTERVAL_MS: int(0, 3_600_000).default(2_000),
});

export interface LoadConfigDefaults {
  /** The user's home directory; defaults to `os.homedir()`. */
  readonly homeDir?: string;
  /** The host's memory in MiB; defaults to `os.totalmem()`. */
  readonly hostMemoryMib?: number;
}

/**
 * Reads the control plane's settings from environment variables (docs/conventions.md and the
 * README list them). Pure apart from the home directory default; a bad value is CONFIG_INVALID
 * naming the variable and what it must look like.
 */
export function loadConfig(
  env: Readonly<Record<string, string | undefined>>,
  defaults: LoadConfigDefaults = {},
): ControlPlaneConfig {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => `${i.path.join(".")} ${i.message}`);
    throw new MsbError(
      "CONFIG_INVALID",
      `Invalid configuration: ${problems.join("; ")}. Fix the variable and restart.`,
      { details: { issues: problems } },
    );
  }
  const e = parsed.data;
  const home = defaults.homeDir ?? homedir();
  const serverKey = [e.MSB_SERVER_KEY, e.MSB_SERVER_SECRET].find(
    (v) => v !== undefined && v !== "",
  );
  const msbHome = resolve(e.MSB_HOME ?? join(home, ".msb"));
  // The same default as the vmm-agent's and image-service's (shared kernel, agent, rootfs).
  const cacheDir = resolve(e.MSB_CACHE_DIR ?? join(home, ".cache", "msb"));

  const [minText, maxText] = e.MSB_PORT_RANGE.split("-") as [string, string];
  const portRange = { min: Number(minText), max: Number(maxText) };
  if (portRange.min < 1 || portRange.max > 65535 || portRange.min > portRange.max) {
    throw invalid("MSB_PORT_RANGE", "must be MIN-MAX with 1 <= MIN <= MAX <= 65535");
  }
  if (e.MSB_RUN_TIMEOUT_MS > e.MSB_RUN_TIMEOUT_MAX_MS) {
    throw invalid("MSB_RUN_TIMEOUT_MS", "must not exceed MSB_RUN_TIMEOUT_MAX_MS");
  }

  // Remote callers get no host directories unless the operator names them; a developer on
  // their own machine (--dev) may mount from their home and /tmp.
  let volumeRoots: string[];
  if (e.MSB_VOLUME_ROOTS !== undefined) {
    volumeRoots = e.MSB_VOLUME_ROOTS.split(":").filter((p) => p !== "");
    const relative = volumeRoots.find((p) => !isAbsolute(p));
    if (relative !== undefined) {
      throw invalid("MSB_VOLUME_ROOTS", `'${relative}' is not an absolute path`);
    }
    volumeRoots = volumeRoots.map((p) => resolve(p));
  } else {
    volumeRoots = e.MSB_DEV ? [resolve(home), "/tmp"] : [];
  }

  return {
    msbHome,
    host: e.MSB_HOST,
    port: e.MSB_PORT,
    dev: e.MSB_DEV,
    allowedOrigins: e.MSB_ALLOWED_ORIGINS.split(",")
      .map((o) => o.trim().toLowerCase().replace(/\/+$/, ""))
      .filter((o) => o !== ""),
    allowedHosts: e.MSB_ALLOWED_HOSTS.split(",")
      .map((h) => h.trim().toLowerCase())
      .filter((h) => h !== ""),
    imageServiceAddr:
      e.MSB_IMAGE_SERVICE_ADDR ?? `unix:${join(msbHome, "run", "image-service.sock")}`,
    vmmAgentAddr: e.MSB_VMM_AGENT_ADDR ?? `unix:${join(msbHome, "run", "vmm-agent.sock")}`,
    serverKey: serverKey === undefined ? undefined : deriveServerSecret(serverKey),
    policy: {
      volumeRoots,
      volumeDenied: [msbHome, cacheDir],
      portRange,
      portsDenied: e.MSB_PORT === 0 ? [] : [e.MSB_PORT],
      allowNetworkAny: e.MSB_ALLOW_NETWORK_ANY || e.MSB_DEV,
      namespacePullRegistries: e.MSB_NAMESPACE_PULL_REGISTRIES.split(",")
        .map((r) => r.trim().toLowerCase())
        .filter((r) => r !== ""),
      maxMemoryMib: e.MSB_MAX_MEMORY_MIB,
      maxCpus: e.MSB_MAX_CPUS,
      namespaceMaxVms: e.MSB_NAMESPACE_MAX_VMS,
      // One namespace may not take the whole host: half its memory unless the operator says.
      namespaceMaxMemoryMib:
        e.MSB_NAMESPACE_MAX_MEMORY_MIB ??
        Math.max(64, Math.floor((defaults.hostMemoryMib ?? totalmem() / MIB) / 2)),
      namespaceMaxSandboxes: e.MSB_NAMESPACE_MAX_SANDBOXES,
    },
    limits: {
      bodyLimitBytes: e.MSB_BODY_LIMIT_BYTES,
      maxBatchSize: e.MSB_MAX_BATCH_SIZE,
      outputLimitBytes: e.MSB_OUTPUT_LIMIT_BYTES,
      mcpMaxSessions: e.MSB_MCP_MAX_SESSIONS,
      mcpMaxSessionsPerKey: e.MSB_MCP_MAX_SESSIONS_PER_KEY,
    },
    http: {
      headersTimeoutMs: Math.min(e.MSB_HTTP_HEADERS_TIMEOUT_MS, e.MSB_HTTP_REQUEST_TIMEOUT_MS),
      requestTimeoutMs: e.MSB_HTTP_REQUEST_TIMEOUT_MS,
      keepAliveTimeoutMs: e.MSB_HTTP_KEEP_ALIVE_TIMEOUT_MS,
    },
    timeouts: {
      runDefaultMs: e.MSB_RUN_TIMEOUT_MS,
      runMaxMs: e.MSB_RUN_TIMEOUT_MAX_MS,
      prepareRootfsMs: e.MSB_PREPARE_ROOTFS_TIMEOUT_MS,
      createVmMs: e.MSB_CREATE_VM_TIMEOUT_MS,
      stopVmMs: e.MSB_STOP_VM_TIMEOUT_MS,
      probeMs: e.MSB_PROBE_TIMEOUT_MS,
      reconcileIntervalMs: e.MSB_RECONCILE_INTERVAL_MS,
    },
  };
}

/** True for addresses only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  return host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host);
}

function invalid(variable: string, why: string): MsbError {
  return new MsbError("CONFIG_INVALID", `Invalid configuration: ${variable} ${why}.`, {
    details: { variable },
  });
}
