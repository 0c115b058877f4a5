import { homedir } from "node:os";
import { join, resolve } from "node:path";

/** The three services `msb server start` supervises, in start order. */
export const SERVICE_NAMES = ["image-service", "vmm-agent", "control-plane"] as const;
export type ServiceName = (typeof SERVICE_NAMES)[number];

/** Log sources `msb server log` knows: the services plus the supervisor itself. */
export const LOG_SOURCES = [...SERVICE_NAMES, "supervisor"] as const;
export type LogSource = (typeof LOG_SOURCES)[number];

/** Every path the CLI reads or writes under `MSB_HOME` (docs/conventions.md). */
export interface MsbPaths {
  readonly home: string;
  readonly runDir: string;
  readonly logsDir: string;
  readonly sandboxesDir: string;
  /** JSON: supervisor pid + starttime, address, children. The one source of truth. */
  readonly lockFile: string;
  /** Plain pid of the supervisor, for shell scripts; written after the lock, removed with it. */
  readonly pidFile: string;
  readonly serverKey: string;
  readonly imageRefs: string;
  socketOf(service: "image-service" | "vmm-agent"): string;
  logOf(source: LogSource): string;
}

/** `--home` wins over `MSB_HOME`, which wins over `~/.msb`. Always absolute. */
export function resolveHome(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  const raw = flag ?? env["MSB_HOME"] ?? join(homedir(), ".msb");
  return resolve(raw);
}

export function msbPaths(home: string): MsbPaths {
  const runDir = join(home, "run");
  const logsDir = join(home, "logs");
  return {
    home,
    runDir,
    logsDir,
    sandboxesDir: join(home, "sandboxes"),
    lockFile: join(runDir, "server.lock"),
    pidFile: join(runDir, "server.pid"),
    serverKey: join(home, "server.key"),
    imageRefs: join(home, "images", "refs.json"),
    socketOf: (service) => join(runDir, `${service}.sock`),
    logOf: (source) => join(logsDir, `${source}.log`),
  };
}
