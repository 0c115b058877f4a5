import { createHash } from "node:crypto";

/**
 * Environment variables that carry a server secret: `MSB_SERVER_KEY` is what the control plane
 * reads; `MSB_SERVER_SECRET` is accepted as an alias. Either is derived like `--key`.
 */
export const SECRET_ENV_VARS = ["MSB_SERVER_KEY", "MSB_SERVER_SECRET"] as const;

/** The secret given in the environment, if any. */
export function secretFromEnv(env: NodeJS.ProcessEnv): string | undefined {
  for (const name of SECRET_ENV_VARS) {
    const value = env[name];
    if (value !== undefined && value !== "") return value;
  }
  return undefined;
}

/**
 * Turns `--key K` into the 32-byte server secret, as 64 hex characters (the form of
 * `server.key`). A 64-character hex K is used as is; anything else is hashed with SHA-256, so
 * a passphrase works and always yields the same secret. The result travels to the control
 * plane in `MSB_SERVER_KEY`, never in argv.
 */
export function deriveServerSecret(key: string): string {
  const trimmed = key.trim();
  if (/^[0-9a-fA-F]{64}$/.test(trimmed)) return trimmed.toLowerCase();
  return createHash("sha256").update(trimmed, "utf8").digest("hex");
}
