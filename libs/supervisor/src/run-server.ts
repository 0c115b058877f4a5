import { existsSync } from "node:fs";
import { MsbError } from "@msb/errors";
import { createLogger, type Logger } from "@msb/runtime";
import { dialUrl, createControlPlaneClient } from "@msb/wire";
import { SERVICE_NAMES, type MsbPaths } from "./home.js";
import { killLeftovers } from "./cleanup.js";
import { acquireLock, type HeldLock } from "./lock.js";
import { acceleratorOf } from "./health.js";
import { findPortHolder, portInUseError, unknownHolder } from "./port-owner.js";
import { ensurePrivateDir } from "./private-dir.js";
import type { ProcessTable } from "./proc.js";
import {
  createServiceSpecs,
  findSetpriv,
  serviceEntry,
  STOP_ORDER,
  type ServerSettings,
} from "./services.js";
import { createSupervisor, type SupervisorEvent } from "./supervisor.js";

export interface RunServerDeps {
  readonly paths: MsbPaths;
  readonly table: ProcessTable;
  readonly env: NodeJS.ProcessEnv;
  readonly root: string;
  readonly node: string;
  /** Lifecycle events for the person (or parent process) watching. */
  readonly onStale: (pid: number | undefined, killed: readonly string[]) => void;
  readonly onEvent: (event: SupervisorEvent) => void;
  readonly onReady: (ready: ServerReady) => void;
  readonly readyTimeoutMs: number;
}

export interface ServerReady {
  readonly url: string;
  readonly pid: number;
  readonly dev: boolean;
  readonly home: string;
  readonly accelerator?: string;
  readonly health: Record<string, unknown>;
  readonly pdeathsig: boolean;
}

/** Signals the server understands: the first stops it cleanly, a second kills at once. */
export interface ServerControl {
  stop(reason: string): void;
}

/**
 * The supervisor process: takes the lock (cleaning a dead predecessor's leftovers), starts the
 * services, keeps them running, and on stop shuts them down in order, kills QEMU stragglers and
 * releases the lock. Resolves when the server has stopped cleanly; rejects with the MsbError
 * that ended it (a service that could not start or kept crashing).
 */
export async function runServer(
  settings: ServerSettings,
  deps: RunServerDeps,
  control: (c: ServerControl) => void,
): Promise<void> {
  const { paths, table } = deps;
  for (const name of SERVICE_NAMES) {
    if (!existsSync(serviceEntry(deps.root, name))) {
      throw new MsbError(
        "SERVICE_UNAVAILABLE",
        `${name} is not built (${serviceEntry(deps.root, name)} is missing). Next step: run \`npm run build\` (or \`npx tsc -b\`) in ${deps.root}.`,
        { details: { service: name } },
      );
    }
  }
  ensurePrivateDir(paths.runDir);
  ensurePrivateDir(paths.logsDir);
  const url = dialUrl(settings.host, settings.port);
  const self = table.info(process.pid);
  const lock: HeldLock = await acquireLock({
    lockFile: paths.lockFile,
    pidFile: paths.pidFile,
    home: paths.home,
    table,
    record: {
      pid: process.pid,
      startTime: self?.startTime ?? "",
      startedAt: new Date().toISOString(),
      url,
      host: settings.host,
      port: settings.port,
      dev: settings.dev,
      customSecret: settings.secret !== undefined,
    },
    onStale: async (stale) => {
      const killed = await killLeftovers(table, paths, stale);
      deps.onStale(stale?.pid, killed);
    },
  });
  const logger: Logger = createLogger({
    name: "supervisor",
    destination: paths.logOf("supervisor"),
  });
  const setpriv = findSetpriv(deps.env);
  if (setpriv === undefined) {
    logger.warn("setpriv (util-linux) not found: services may outlive a killed supervisor");
  }
  const supervisor = createSupervisor({
    services: createServiceSpecs(settings, {
      root: deps.root,
      paths,
      env: deps.env,
      node: deps.node,
      ...(setpriv === undefined ? {} : { setpriv }),
      supervisor: lock.record,
    }),
    stopOrder: STOP_ORDER,
    logger,
    table,
    readyTimeoutMs: deps.readyTimeoutMs,
    onEvent: (event) => {
      if (event.type === "spawned")
        lock.setService(event.service, { pid: event.pid, startTime: event.startTime });
      if (event.type === "exited") lock.setService(event.service, undefined);
      deps.onEvent(event);
    },
  });

  let stopRequested = false;
  let finishing: Promise<void> | undefined;
  const finish = (reason: string): Promise<void> =>
    (finishing ??= (async () => {
      await supervisor.stop(reason);
      const killed = await killLeftovers(table, paths, undefined);
      if (killed.length > 0)
        logger.warn({ killed }, "killed QEMU processes left after vmm-agent stopped");
      lock.release();
      logger.info({ reason }, "server stopped");
      logger.flush();
    })());
  control({
    stop(reason) {
      if (stopRequested) {
        supervisor.killNow();
        return;
      }
      stopRequested = true;
      void finish(reason);
    },
  });

  try {
    await supervisor.start();
  } catch (err) {
    await finish("start failed");
    throw refinePortError(err, settings.port, table);
  }
  if (!stopRequested) {
    const health = await createControlPlaneClient({ url })
      .health()
      .catch(() => ({}));
    const accelerator = acceleratorOf(health);
    logger.info({ url, dev: settings.dev, accelerator }, "server ready");
    deps.onReady({
      url,
      pid: process.pid,
      dev: settings.dev,
      home: paths.home,
      ...(accelerator === undefined ? {} : { accelerator }),
      health,
      pdeathsig: setpriv !== undefined,
    });
  }
  const outcome = await supervisor.done;
  await finish(
    outcome.error === undefined ? "stop requested" : "a service could not be kept running",
  );
  if (outcome.error !== undefined) throw outcome.error;
}

/** A control plane that died with EADDRINUSE lost a race for the port: say who won it. */
function refinePortError(err: unknown, port: number, table: ProcessTable): unknown {
  if (
    err instanceof MsbError &&
    err.details["service"] === "control-plane" &&
    /EADDRINUSE/.test(err.message)
  ) {
    return portInUseError(findPortHolder(port, { table }) ?? unknownHolder(port, {}));
  }
  return err;
}
