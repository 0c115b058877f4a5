import { MsbError } from "@msb/errors";
import type { Logger } from "@msb/runtime";
import type { SandboxService } from "./service.js";

export interface ReconcilerOptions {
  /** Wait between attempts while the vmm-agent is unreachable. Default 5 s. */
  readonly retryMs?: number;
  readonly signal: AbortSignal;
}

/**
 * Reconciles the database with the vmm-agent once, retrying while the vmm-agent is down
 * (at startup the services come up in any order). Resolves when done or when `signal` aborts.
 */
export async function reconcileWhenReady(
  service: SandboxService,
  logger: Logger,
  options: ReconcilerOptions,
): Promise<void> {
  const retryMs = options.retryMs ?? 5_000;
  for (let attempt = 1; !options.signal.aborted; attempt += 1) {
    try {
      const report = await service.reconcile(options.signal);
      logger.info({ ...report, attempt }, "reconciled sandboxes with the vmm-agent");
      return;
    } catch (err) {
      if (options.signal.aborted) return;
      const transient =
        err instanceof MsbError && ["SERVICE_UNAVAILABLE", "TIMEOUT"].includes(err.code);
      logger[transient ? "warn" : "error"](
        { err, attempt, retryMs },
        "could not reconcile sandboxes with the vmm-agent yet; retrying",
      );
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, retryMs);
        options.signal.addEventListener(
          "abort",
          () => {
            clearTimeout(timer);
            resolve();
          },
          { once: true },
        );
      });
    }
  }
}
