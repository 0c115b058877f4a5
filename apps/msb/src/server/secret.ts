import { createHash } from "node:crypto";

/**
 * Turns `--key K` into the 32-byte server secret, as 64 hex characters (the form of
 * `server.key`). A 64-character hex K is used as is; anything else is hashed with SHA-256, so
 * a passphrase works and always yields the same secret. The result travels to the control
 * plane in `MSB_SERVER_SECRET`, never in argv.
 */
export function deriveServerSecret(key: string): string {
  const trimmed = key.trim();
  if (/^[0-9a-fA-F]{64}$/.test(trimmed)) return trimmed.toLowerCase();
  return createHash("sha256").update(trimmed, "utf8").digest("hex");
}
