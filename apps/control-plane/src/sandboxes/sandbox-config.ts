import { createHash } from "node:crypto";
import type { VmNetwork, VmPort, VmVolume } from "./backends.js";

/**
 * A sandbox's configuration after validation, policy checks and defaults: what is stored in
 * the database and compared when the same sandbox is started again.
 */
export interface SandboxConfig {
  readonly image: string;
  readonly memoryMib: number;
  readonly cpus: number;
  readonly envs: readonly string[];
  readonly workdir: string | null;
  readonly volumes: readonly VmVolume[];
  readonly ports: readonly VmPort[];
  readonly network: VmNetwork;
  /** Named commands (Sandboxfile `scripts`); recorded for clients, run by them via command.run. */
  readonly scripts: Readonly<Record<string, string>>;
  /** Recorded for clients (Sandboxfile `exec`); the control plane does not run it. */
  readonly exec: string | null;
}

/**
 * Identity of a configuration: two starts with equal hashes ask for the same sandbox.
 * Keys are sorted so the hash does not depend on property order.
 */
export function configHash(config: SandboxConfig): string {
  return createHash("sha256").update(canonicalJson(config)).digest("hex");
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value);
}
