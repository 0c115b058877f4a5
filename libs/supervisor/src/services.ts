import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { dialUrl } from "@msb/wire";
import type { MsbPaths, ServiceName } from "./home.js";
import { waitForHealth, waitForSocket } from "./readiness.js";
import { SECRET_ENV_VARS } from "./secret.js";
import type { ServiceSpec } from "./supervisor.js";

/** What `msb server start` was asked for, resolved. */
export interface ServerSettings {
  readonly host: string;
  readonly port: number;
  readonly dev: boolean;
  /** 64 hex characters from `--key`; handed to the control plane only, in its environment. */
  readonly secret?: string;
  readonly kernel?: string;
  readonly initramfs?: string;
}

export interface ServiceSpecDeps {
  /** The repository (or install) root holding `apps/<name>/dist/main.js`. */
  readonly root: string;
  readonly paths: MsbPaths;
  /** The environment children inherit (the supervisor's, minus what must not leak). */
  readonly env: NodeJS.ProcessEnv;
  /** Absolute path of the node binary. */
  readonly node: string;
  /** `setpriv` path when available: children then die with the supervisor (PDEATHSIG). */
  readonly setpriv?: string;
  /** The supervisor itself (pid + `/proc` start time): every service carries it as its owner. */
  readonly supervisor: { readonly pid: number; readonly startTime: string };
}

/**
 * Environment variable naming a service's supervisor as `<pid>:<start time>`. The service's
 * preload exits when its parent is not that pid (see bin/parent-guard.cjs), and a later start
 * for the same MSB_HOME recognises a service whose supervisor is dead as its own leftover.
 */
export const SUPERVISOR_ENV = "MSB_SUPERVISOR";

/** The preload that makes a service exit if its supervisor died before PDEATHSIG was set. */
export const PARENT_GUARD = fileURLToPath(new URL("../bin/parent-guard.cjs", import.meta.url));

/** Finds util-linux `setpriv` on PATH. */
export function findSetpriv(env: NodeJS.ProcessEnv): string | undefined {
  const dirs = (env["PATH"] ?? "/usr/bin:/bin").split(":");
  return [...dirs, "/usr/bin", "/bin"].map((d) => join(d, "setpriv")).find((p) => existsSync(p));
}

export function serviceEntry(root: string, name: ServiceName): string {
  return join(root, "apps", name, "dist", "main.js");
}

/** Env vars that must reach no child except the one that needs them. */
const PRIVATE_ENV = [...SECRET_ENV_VARS, "MSB_DETACHED_SUPERVISOR"];

/**
 * The three services as the supervisor runs them: image-service and vmm-agent first (ready
 * when their gRPC unix socket accepts), then the control plane (ready when /health answers).
 * Each is `node apps/<name>/dist/main.js`, configured only by env vars, and wrapped in
 * `setpriv --pdeathsig TERM` so it cannot outlive the supervisor, even after a kill -9; the
 * parent guard preload closes the window between fork and that prctl.
 */
export function createServiceSpecs(settings: ServerSettings, deps: ServiceSpecDeps): ServiceSpec[] {
  const { paths } = deps;
  const base: NodeJS.ProcessEnv = { ...deps.env };
  for (const name of PRIVATE_ENV) delete base[name];
  Object.assign(base, {
    MSB_HOME: paths.home,
    MSB_IMAGE_SERVICE_ADDR: `unix:${paths.socketOf("image-service")}`,
    MSB_VMM_AGENT_ADDR: `unix:${paths.socketOf("vmm-agent")}`,
    [SUPERVISOR_ENV]: `${deps.supervisor.pid}:${deps.supervisor.startTime}`,
  });
  const argv = (name: ServiceName) => {
    const entry = serviceEntry(deps.root, name);
    const node = [deps.node, "--require", PARENT_GUARD, entry];
    return deps.setpriv === undefined
      ? { command: deps.node, args: node.slice(1) }
      : { command: deps.setpriv, args: ["--pdeathsig", "TERM", "--", ...node] };
  };
  const url = dialUrl(settings.host, settings.port);
  return [
    {
      name: "image-service",
      stage: 0,
      ...argv("image-service"),
      env: base,
      logFile: paths.logOf("image-service"),
      ready: (signal) => waitForSocket(paths.socketOf("image-service"), signal),
      socketPath: paths.socketOf("image-service"),
      stopTimeoutMs: 10_000,
    },
    {
      name: "vmm-agent",
      stage: 0,
      ...argv("vmm-agent"),
      env: {
        ...base,
        ...(settings.kernel === undefined ? {} : { MSB_KERNEL: settings.kernel }),
        ...(settings.initramfs === undefined ? {} : { MSB_INITRAMFS: settings.initramfs }),
        // It enforces MSB_VOLUME_ROOTS itself, whose default depends on dev mode.
        MSB_DEV: settings.dev ? "1" : "0",
      },
      logFile: paths.logOf("vmm-agent"),
      ready: (signal) => waitForSocket(paths.socketOf("vmm-agent"), signal),
      socketPath: paths.socketOf("vmm-agent"),
      // It stops every VM on SIGTERM; give the guests time to sync.
      stopTimeoutMs: 30_000,
    },
    {
      name: "control-plane",
      stage: 1,
      ...argv("control-plane"),
      env: {
        ...base,
        MSB_HOST: settings.host,
        MSB_PORT: String(settings.port),
        MSB_DEV: settings.dev ? "1" : "0",
        ...(settings.secret === undefined ? {} : { MSB_SERVER_KEY: settings.secret }),
      },
      logFile: paths.logOf("control-plane"),
      ready: async (signal) => {
        await waitForHealth(url, signal);
      },
      stopTimeoutMs: 10_000,
    },
  ];
}

/** Stop order: the public surface first, then the VMs, then images. */
export const STOP_ORDER: readonly ServiceName[] = ["control-plane", "vmm-agent", "image-service"];
