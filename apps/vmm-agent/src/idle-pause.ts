import type { Logger } from "@msb/runtime";

/** What can be paused: a VM's vCPUs (QMP stop / cont). */
export interface Pausable {
  pause(signal: AbortSignal): Promise<void>;
  resume(signal: AbortSignal): Promise<void>;
}

/**
 * Pauses a VM that had no call for `idleMs` (0 % host CPU instead of TCG's timer ticks) and
 * resumes it at the start of the next call of any kind. A call in flight (a long exec, a
 * streaming cell) keeps the VM running however long it takes.
 */
export interface IdleTracker {
  /** A call starts: waits for a pause in progress, resumes if paused. Returns `end`. */
  begin(): Promise<() => void>;
  /** Starts the idle timer (once the VM is running). */
  arm(): void;
  readonly paused: boolean;
  /** Stops the timer for good (VM stopping or gone). */
  dispose(): void;
}

/** Deadline of one QMP stop/cont. */
const QMP_TIMEOUT_MS = 5_000;

export function createIdleTracker(
  target: Pausable,
  options: { idleMs: number; logger: Logger; vmId: string },
): IdleTracker {
  let active = 0;
  let paused = false;
  let disposed = false;
  let timer: NodeJS.Timeout | undefined;
  // pause and resume never overlap: each waits for the one before it.
  let transition: Promise<void> = Promise.resolve();

  const schedule = (): void => {
    clearTimeout(timer);
    if (disposed || active > 0 || options.idleMs <= 0) return;
    timer = setTimeout(() => {
      transition = transition.then(async () => {
        if (disposed || active > 0 || paused) return;
        try {
          await target.pause(AbortSignal.timeout(QMP_TIMEOUT_MS));
          paused = true;
          options.logger.debug({ vmId: options.vmId }, "vm paused (idle)");
        } catch (err) {
          options.logger.warn({ vmId: options.vmId, err }, "idle pause failed");
        }
      });
    }, options.idleMs);
    timer.unref();
  };

  return {
    get paused() {
      return paused;
    },
    arm: schedule,
    async begin() {
      active++;
      clearTimeout(timer);
      const resumed = transition.then(async () => {
        if (!paused) return;
        const t0 = Date.now();
        await target.resume(AbortSignal.timeout(QMP_TIMEOUT_MS));
        paused = false;
        options.logger.debug({ vmId: options.vmId, resumeMs: Date.now() - t0 }, "vm resumed");
      });
      transition = resumed.catch(() => undefined);
      let ended = false;
      const end = (): void => {
        if (ended) return;
        ended = true;
        active--;
        schedule();
      };
      try {
        await resumed;
      } catch (err) {
        end();
        throw err;
      }
      return end;
    },
    dispose() {
      disposed = true;
      clearTimeout(timer);
    },
  };
}
