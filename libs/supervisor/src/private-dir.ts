import { chmodSync, mkdirSync } from "node:fs";

/**
 * Creates `dir` (and missing parents) readable by the server's user only, and tightens it to
 * 0700 if an older version left it wider: run/ holds the lock and the services' sockets,
 * logs/ what the services print.
 */
export function ensurePrivateDir(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}
