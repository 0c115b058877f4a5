import type { Logger } from "pino";

/** A resource released on shutdown, newest first. Each hook gets the remaining deadline. */
export type ShutdownHook = (signal: AbortSignal) => Promise<void> | void;

export interface Lifecycle {
  /** Aborted when shutdown starts; pass it to every long operation. */
  readonly signal: AbortSignal;
  /** Registers a hook run on shutdown in reverse registration order. */
  onShutdown(name: string, hook: ShutdownHook): void;
  /** Starts the one shutdown path; resolves when every hook finished or the deadline passed. */
  shutdown(reason: string): Promise<void>;
}

export interface LifecycleOptions {
  readonly logger: Logger;
  /** Time the hooks get, in total, before the process is forced down. Default 10 s. */
  readonly drainTimeoutMs?: number;
}

export function createLifecycle(options: LifecycleOptions): Lifecycle {
  const { logger } = options;
  const drainTimeoutMs = options.drainTimeoutMs ?? 10_000;
  const controller = new AbortController();
  const hooks: { name: string; hook: ShutdownHook }[] = [];
  let running: Promise<void> | undefined;

  const run = async (reason: string): Promise<void> => {
    logger.info({ reason }, "shutting down");
    controller.abort(new Error(`shutting down: ${reason}`));
    const deadline = AbortSignal.timeout(drainTimeoutMs);
    for (const { name, hook } of [...hooks].reverse()) {
      if (deadline.aborted) {
        logger.warn({ hook: name }, "drain deadline passed; skipping remaining hooks");
        break;
      }
      try {
        await Promise.race([
          Promise.resolve(hook(deadline)),
          new Promise<void>((resolve) => deadline.addEventListener("abort", () => resolve())),
        ]);
      } catch (err) {
        logger.error({ err, hook: name }, "shutdown hook failed");
      }
    }
    logger.info("shut down");
  };

  return {
    signal: controller.signal,
    onShutdown(name, hook) {
      hooks.push({ name, hook });
    },
    shutdown(reason) {
      running ??= run(reason);
      return running;
    },
  };
}

export interface RunMainOptions {
  readonly logger: Logger;
  readonly drainTimeoutMs?: number;
}

/**
 * Composition-root helper for every msb process: runs `main`, wires SIGINT/SIGTERM to the one
 * shutdown path (a second signal exits at once), and turns a startup failure into a logged
 * error and exit code 1. Only entry points call this; libraries never exit the process.
 */
export function runMain(
  main: (lifecycle: Lifecycle) => Promise<void>,
  options: RunMainOptions,
): void {
  const { logger } = options;
  const lifecycle = createLifecycle(options);
  let signals = 0;
  const onSignal = (sig: NodeJS.Signals): void => {
    signals += 1;
    if (signals > 1) {
      logger.warn({ signal: sig }, "second signal: exiting now");
      process.exit(130);
    }
    void lifecycle.shutdown(sig).then(() => process.exit(0));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  process.on("unhandledRejection", (err) => {
    logger.error({ err }, "unhandled rejection");
  });
  main(lifecycle).catch((err: unknown) => {
    logger.error({ err }, "failed to start");
    void lifecycle.shutdown("startup failure").then(() => process.exit(1));
  });
}
