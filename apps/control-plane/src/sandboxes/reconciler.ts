import { MsbError } from "@msb/errors";
import type { Logger } from "@msb/runtime";
import type { SandboxService } from "./service.js";

export interface ReconcilerOptions {
  /** Wait between attempts while the vmm-agent is unreachable. Default 5 s. */
  readonly retryMs?: number;
  /**
   * Wait between the periodic passes after the first one: how long the database may say
   * `running` for a VM that died without anyone calling it (QEMU killed, guest panic, a
   * vmm-agent restarted by the supervisor). 0 disables them. Default 2 s.
   */
  readonly intervalMs?: number;
  readonly signal: AbortSignal;
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });
}

/**
 * Reconciles the database with the vmm-agent once, retrying while the vmm-agent is down
 * (at startup the services come up in any order), then keeps doing it every `intervalMs`
 * (a ListVms call) so a VM that dies is marked failed even when nobody calls it.
 * Resolves when `signal` aborts.
 */
export async function reconcileWhenReady(
  service: SandboxService,
  logger: Logger,
  options: ReconcilerOptions,
): Promise<void> {
  const retryMs = options.retryMs ?? 5_000;
  const intervalMs = options.intervalMs ?? 2_000;
  for (let attempt = 1; !options.signal.aborted; attempt += 1) {
    try {
      const report = await service.reconcile(options.signal);
      logger.info({ ...report, attempt }, "reconciled sandboxes with the vmm-agent");
      break;
    } catch (err) {
      if (options.signal.aborted) return;
      const transient =
        err instanceof MsbError && ["SERVICE_UNAVAILABLE", "TIMEOUT"].includes(err.code);
      logger[transient ? "warn" : "error"](
        { err, attempt, retryMs },
        "could not reconcile sandboxes with the vmm-agent yet; retrying",
      );
      await sleep(retryMs, options.signal);
    }
  }
  if (intervalMs <= 0) return;
  let orphansSeen = "";
  let failing = false;
  while (!options.signal.aborted) {
    await sleep(intervalMs, options.signal);
    if (options.signal.aborted) return;
    try {
      const report = await service.reconcile(options.signal, { live: true });
      if (failing) logger.info("the vmm-agent answers ListVms again");
      failing = false;
      const orphans = [...report.orphans].sort().join(",");
      if (orphans !== orphansSeen && report.orphans.length > 0) {
        logger.warn(
          { orphans: report.orphans },
          "the vmm-agent runs VMs the control plane has no record of",
        );
      }
      orphansSeen = orphans;
    } catch (err) {
      if (options.signal.aborted) return;
      // The vmm-agent restarting is the usual cause; say so once, not every pass.
      if (!failing) logger.warn({ err }, "periodic reconciliation failed; will retry");
      failing = true;
    }
  }
}
