import type { IncomingHttpHeaders } from "node:http";
import { MsbError } from "@msb/errors";
import { verifyApiKey, type ServerSecret } from "@msb/keys";
import { DEV_CALLER, type Caller } from "./caller.js";

/** Turns a request's headers into a Caller, or throws AUTH_REQUIRED / AUTH_INVALID. */
export interface Authenticator {
  authenticate(headers: IncomingHttpHeaders): Caller;
}

export interface AuthenticatorOptions {
  /** `--dev`: no key needed; a key that is sent anyway is ignored. */
  readonly dev: boolean;
  readonly secret: ServerSecret;
  /** Clock in ms since the epoch (tests pass a fixed one). */
  readonly now?: () => number;
}

/**
 * API-key authentication shared by JSON-RPC and MCP. The key is read from
 * `Authorization: Bearer <key>`, a bare `Authorization: <key>`, or the same forms in
 * `Proxy-Authorization` (clients behind proxies that eat Authorization).
 */
export function createAuthenticator(options: AuthenticatorOptions): Authenticator {
  const now = options.now ?? Date.now;
  return {
    authenticate(headers) {
      if (options.dev) return DEV_CALLER;
      const key = extractKey(headers);
      if (key === undefined) {
        throw new MsbError(
          "AUTH_REQUIRED",
          "This server requires an API key. Send 'Authorization: Bearer <key>' (the SDKs read MSB_API_KEY); create a key with 'msb server keygen'.",
        );
      }
      const granted = verifyApiKey(options.secret, key, now());
      return { scope: granted.namespace, id: granted.keyId };
    },
  };
}

/** The API key from the headers, or undefined when none was sent. */
export function extractKey(headers: IncomingHttpHeaders): string | undefined {
  for (const name of ["authorization", "proxy-authorization"] as const) {
    const raw = headers[name];
    if (typeof raw !== "string" || raw.trim() === "") continue;
    const value = raw.trim();
    const space = value.indexOf(" ");
    if (space === -1) return value;
    const scheme = value.slice(0, space).toLowerCase();
    if (scheme !== "bearer") {
      throw new MsbError(
        "AUTH_INVALID",
        `The ${name} header uses the '${value.slice(0, space)}' scheme; msb expects 'Bearer <key>'. Create a key with 'msb server keygen'.`,
        { details: { reason: "scheme" } },
      );
    }
    return value.slice(space + 1).trim();
  }
  return undefined;
}
