import { CONTROL_TIMEOUT_SECONDS, type SandboxChannel } from "./channel.js";
import { SandboxNotFoundError } from "./errors.js";

/** One sandbox's entry of `sandbox.metrics.get`. */
export interface SandboxMetrics {
  readonly namespace: string;
  readonly name: string;
  readonly running: boolean;
  /** Percent of one CPU. */
  readonly cpu_usage?: number | null;
  /** MiB. */
  readonly memory_usage?: number | null;
  /** Bytes. */
  readonly disk_usage?: number | null;
  readonly [key: string]: unknown;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Resource usage of one sandbox (`sb.metrics`); every call asks the server anew. */
export class Metrics {
  readonly #sandbox: SandboxChannel;

  constructor(sandbox: SandboxChannel) {
    this.#sandbox = sandbox;
  }

  /** All values from one snapshot. Rejects with SandboxNotFoundError for an unknown sandbox. */
  async all(): Promise<SandboxMetrics> {
    const sb = this.#sandbox;
    const result = await sb.rpc.call(
      "sandbox.metrics.get",
      { namespace: sb.namespace, sandbox: sb.name },
      { timeoutMs: CONTROL_TIMEOUT_SECONDS * 1000 },
    );
    const list = isRecord(result) ? result["sandboxes"] : undefined;
    for (const entry of Array.isArray(list) ? (list as unknown[]) : []) {
      if (
        isRecord(entry) &&
        entry["name"] === sb.name &&
        (entry["namespace"] ?? sb.namespace) === sb.namespace
      ) {
        return entry as SandboxMetrics;
      }
    }
    throw new SandboxNotFoundError(
      `sandbox '${sb.name}' not found in namespace '${sb.namespace}'; start it first`,
      "SANDBOX_NOT_FOUND",
    );
  }

  /** CPU usage in percent of one core, `undefined` when unknown. */
  async cpu(): Promise<number | undefined> {
    return numberOrUndefined((await this.all()).cpu_usage);
  }

  /** Memory in use in MiB, `undefined` when unknown. */
  async memory(): Promise<number | undefined> {
    return numberOrUndefined((await this.all()).memory_usage);
  }

  /** Disk in use in bytes, `undefined` when unknown. */
  async disk(): Promise<number | undefined> {
    return numberOrUndefined((await this.all()).disk_usage);
  }

  /** True while the sandbox runs; false when it is stopped or unknown to the server. */
  async isRunning(): Promise<boolean> {
    try {
      return (await this.all()).running === true;
    } catch (err) {
      if (err instanceof SandboxNotFoundError) return false;
      throw err;
    }
  }
}

function numberOrUndefined(value: unknown): number | undefined {
  return typeof value === "number" ? value : undefined;
}
