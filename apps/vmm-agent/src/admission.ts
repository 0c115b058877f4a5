import { MsbError } from "@msb/errors";

/** What admission control counts against. */
export interface AdmissionLimits {
  readonly maxVms: number;
  /** Sum of VM memory sizes allowed on this host. */
  readonly memoryBudgetMib: number;
  /** Boots allowed in flight at once. */
  readonly maxConcurrentBoots: number;
}

/** A VM's place in the budget; released exactly once when the VM is gone. */
export interface Reservation {
  readonly memoryMib: number;
  release(): void;
}

export interface Admission {
  /** Takes a VM slot and its memory, or throws CAPACITY_EXHAUSTED; never waits. */
  reserve(memoryMib: number): Reservation;
  /**
   * Takes memory without a VM slot (a template's RAM file on tmpfs), or throws
   * CAPACITY_EXHAUSTED; never waits.
   */
  reserveMemory(memoryMib: number): Reservation;
  /**
   * Waits for a boot slot (FIFO). A burst of creates therefore boots a few at a time instead
   * of making every boot time out; `signal` abandons the wait.
   */
  acquireBoot(signal: AbortSignal): Promise<() => void>;
  usage(): { vms: number; memoryMib: number; booting: number; queuedBoots: number };
  readonly limits: AdmissionLimits;
}

export function createAdmission(limits: AdmissionLimits): Admission {
  let vms = 0;
  let memoryMib = 0;
  let booting = 0;
  const queue: { grant: () => void }[] = [];

  const releaseBoot = (): void => {
    const next = queue.shift();
    if (next === undefined) booting -= 1;
    else next.grant();
  };
  const bootSlot = (): (() => void) => {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      releaseBoot();
    };
  };

  function take(requestedMib: number, vm: boolean): Reservation {
    if (vm && vms + 1 > limits.maxVms) {
      throw new MsbError(
        "CAPACITY_EXHAUSTED",
        `This host already runs its maximum of ${limits.maxVms} VMs. Stop a sandbox or raise MSB_MAX_VMS.`,
        { details: { maxVms: limits.maxVms, vms } },
      );
    }
    if (memoryMib + requestedMib > limits.memoryBudgetMib) {
      throw new MsbError(
        "CAPACITY_EXHAUSTED",
        `Not enough memory for a ${requestedMib} MiB VM: ${memoryMib} of ${limits.memoryBudgetMib} MiB are already given to VMs and templates. Stop a sandbox, ask for less memory, or raise MSB_VM_MEMORY_PERCENT.`,
        {
          details: {
            requestedMib,
            usedMib: memoryMib,
            budgetMib: limits.memoryBudgetMib,
          },
        },
      );
    }
    if (vm) vms += 1;
    memoryMib += requestedMib;
    let released = false;
    return {
      memoryMib: requestedMib,
      release() {
        if (released) return;
        released = true;
        if (vm) vms -= 1;
        memoryMib -= requestedMib;
      },
    };
  }

  return {
    limits,
    reserve(requestedMib) {
      return take(requestedMib, true);
    },
    reserveMemory(requestedMib) {
      return take(requestedMib, false);
    },
    acquireBoot(signal) {
      if (signal.aborted) return Promise.reject(toError(signal.reason));
      if (booting < limits.maxConcurrentBoots) {
        booting += 1;
        return Promise.resolve(bootSlot());
      }
      return new Promise((resolve, reject) => {
        const entry = {
          grant: () => {
            signal.removeEventListener("abort", onAbort);
            resolve(bootSlot());
          },
        };
        const onAbort = (): void => {
          const i = queue.indexOf(entry);
          if (i >= 0) queue.splice(i, 1);
          reject(toError(signal.reason));
        };
        signal.addEventListener("abort", onAbort, { once: true });
        queue.push(entry);
      });
    },
    usage() {
      return { vms, memoryMib, booting, queuedBoots: queue.length };
    },
  };
}

function toError(reason: unknown): Error {
  return reason instanceof Error
    ? reason
    : new MsbError("CANCELLED", "Waiting for a boot slot was cancelled.");
}
