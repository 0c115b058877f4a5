import { createHash, randomBytes } from "node:crypto";
import { chmod, link, mkdir, open, readFile, unlink } from "node:fs/promises";
import { join } from "node:path";
import { MsbError } from "@msb/errors";

/** File name of the server secret under MSB_HOME (docs/conventions.md). */
export const SERVER_SECRET_FILE = "server.key";

const SECRET_PATTERN = /^[0-9a-f]{64}$/;

/**
 * Returns the server secret that signs API keys: `$MSB_HOME/server.key`, 32 random bytes as
 * hex, created on first use with mode 0600. Creation is atomic and race-free: the secret is
 * written to a private temp file and hard-linked into place, so two processes starting at once
 * agree on one secret and nobody ever reads a half-written file. A file that exists but does
 * not hold 64 hex characters is CONFIG_INVALID (never silently replaced: that would void every
 * key already handed out).
 */
export async function loadOrCreateServerSecret(msbHome: string): Promise<string> {
  const path = join(msbHome, SERVER_SECRET_FILE);
  const existing = await readSecret(path);
  if (existing !== undefined) return existing;

  await mkdir(msbHome, { recursive: true, mode: 0o700 });
  const secret = randomBytes(32).toString("hex");
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString("hex")}.tmp`;
  const handle = await open(tmp, "wx", 0o600);
  try {
    await handle.writeFile(`${secret}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
  // umask may have narrowed the mode further; it must not have widened it, but make sure.
  await chmod(tmp, 0o600);
  try {
    await link(tmp, path);
    return secret;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    // Another process won the race: its secret is the one.
    const winner = await readSecret(path);
    if (winner === undefined) throw err;
    return winner;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

async function readSecret(path: string): Promise<string | undefined> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw err;
  }
  const secret = text.trim();
  if (!SECRET_PATTERN.test(secret)) {
    throw new MsbError(
      "CONFIG_INVALID",
      `${path} does not hold a server secret (64 hex characters). Restore it from a backup, or delete it to create a new one (every API key issued so far will stop working).`,
      { details: { path } },
    );
  }
  return secret;
}

/**
 * Turns an operator-chosen key (`msb server start --key K`, `MSB_SERVER_KEY`) into the server
 * secret, in the form of `server.key`: 64 hex characters are used as they are (lower-cased),
 * anything else (a passphrase) is hashed with SHA-256, so the same K always gives the same
 * secret in every process that signs or verifies keys.
 */
export function deriveServerSecret(key: string): string {
  const trimmed = key.trim();
  if (SECRET_PATTERN.test(trimmed.toLowerCase())) return trimmed.toLowerCase();
  return createHash("sha256").update(trimmed, "utf8").digest("hex");
}
