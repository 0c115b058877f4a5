import { createHmac, randomBytes, timingSafeEqual } from "node:crypto";
import { MsbError } from "@msb/errors";
import { ALL_NAMESPACES, NAME_PATTERN } from "./names.js";

/** Every key starts with this, so a key is recognisable in a config file or a leak scanner. */
export const API_KEY_PREFIX = "msb_";

/** Keys longer than this are rejected before any work is done on them. */
const MAX_KEY_LENGTH = 1024;
/** Domain separation: a MAC for an API key can never be mistaken for another msb MAC. */
const MAC_CONTEXT = "msb-api-key.v1.";
const BASE64URL = /^[A-Za-z0-9_-]+$/;
/** HMAC-SHA256 output. */
const MAC_BYTES = 32;

/** The server secret: the hex text of `server.key` (or any string the operator chose), or bytes. */
export type ServerSecret = string | Uint8Array;

export interface CreateApiKeyOptions {
  /** The one namespace the key may touch, or `"*"` for all of them. */
  readonly namespace: string;
  /** Lifetime in milliseconds; no expiry when omitted. */
  readonly expiresInMs?: number;
  /** Issue time in milliseconds since the epoch; defaults to now (tests pass a fixed clock). */
  readonly now?: number;
}

/** What a valid key grants. Times are milliseconds since the epoch. */
export interface VerifiedApiKey {
  /** The namespace the key is bound to, or `"*"`. */
  readonly namespace: string;
  /** When the key stops working; `null` for a key without expiry. */
  readonly expiresAt: number | null;
  readonly issuedAt: number;
  /** Random id of the key (`jti`): safe to log, identifies the key without revealing it. */
  readonly keyId: string;
}

interface Payload {
  v: 1;
  ns: string;
  iat: number;
  exp?: number;
  jti: string;
}

/**
 * Issues an API key bound to one namespace (or `"*"`), signed with the server secret:
 * `msb_<base64url(JSON payload {v:1, ns, iat, exp?, jti})>.<base64url(HMAC-SHA256)>`.
 * Keys are stateless: any process holding the secret can verify them, and replacing
 * `server.key` revokes all of them at once.
 */
export function createApiKey(secret: ServerSecret, options: CreateApiKeyOptions): string {
  const { namespace } = options;
  if (namespace !== ALL_NAMESPACES && !NAME_PATTERN.test(namespace)) {
    throw new MsbError(
      "INVALID_PARAMS",
      `Invalid namespace '${namespace}': use '*' for all namespaces or a name matching ${NAME_PATTERN.source}.`,
      { details: { field: "namespace" } },
    );
  }
  const now = options.now ?? Date.now();
  const payload: Payload = {
    v: 1,
    ns: namespace,
    iat: now,
    jti: randomBytes(12).toString("base64url"),
  };
  if (options.expiresInMs !== undefined) {
    if (!Number.isSafeInteger(options.expiresInMs) || options.expiresInMs <= 0) {
      throw new MsbError(
        "INVALID_PARAMS",
        `Invalid key lifetime ${options.expiresInMs} ms: it must be a positive whole number of milliseconds.`,
        { details: { field: "expiresInMs" } },
      );
    }
    payload.exp = now + options.expiresInMs;
  }
  const body = Buffer.from(JSON.stringify(payload)).toString("base64url");
  return `${API_KEY_PREFIX}${body}.${mac(secret, body).toString("base64url")}`;
}

/**
 * Checks a key's signature and expiry. Returns what it grants, or throws AUTH_INVALID whose
 * message says what is wrong (malformed, signed by another server or altered, expired) and
 * how to get a new key; `details.reason` is `malformed`, `signature` or `expired`.
 */
export function verifyApiKey(
  secret: ServerSecret,
  key: string,
  now: number = Date.now(),
): VerifiedApiKey {
  if (key.length > MAX_KEY_LENGTH || !key.startsWith(API_KEY_PREFIX)) throw malformed();
  const parts = key.slice(API_KEY_PREFIX.length).split(".");
  if (parts.length !== 2) throw malformed();
  const [body, signature] = parts as [string, string];
  if (!BASE64URL.test(body) || !BASE64URL.test(signature)) throw malformed();
  // Only the canonical encoding: base64url ignores the low bits of a last character, so
  // several strings decode to the same bytes; a key is exactly the string that was issued.
  const given = Buffer.from(signature, "base64url");
  if (given.toString("base64url") !== signature || given.length !== MAC_BYTES) throw malformed();
  if (Buffer.from(body, "base64url").toString("base64url") !== body) throw malformed();
  // Garbage is malformed, not "signed by another server": the payload must have our shape
  // (a bounded JSON.parse of at most MAX_KEY_LENGTH characters; nothing is trusted before
  // the signature is checked below).
  const payload = parsePayload(body);
  if (payload === undefined) throw malformed();

  const expected = mac(secret, body);
  if (!timingSafeEqual(given, expected)) {
    throw new MsbError(
      "AUTH_INVALID",
      "The API key's signature does not match this server: the key was altered, or it was issued by another msb server (or before this server's server.key was replaced). Create a new key on this server with 'msb server keygen'.",
      { details: { reason: "signature" } },
    );
  }

  if (payload.exp !== undefined && payload.exp <= now) {
    const at = new Date(payload.exp).toISOString();
    throw new MsbError(
      "AUTH_INVALID",
      `The API key expired at ${at}. Create a new key with 'msb server keygen --expire <duration>' (e.g. 24h, 7d).`,
      { details: { reason: "expired", expiredAt: at } },
    );
  }
  return {
    namespace: payload.ns,
    expiresAt: payload.exp ?? null,
    issuedAt: payload.iat,
    keyId: payload.jti,
  };
}

function mac(secret: ServerSecret, body: string): Buffer {
  return createHmac("sha256", secret).update(MAC_CONTEXT).update(body).digest();
}

function malformed(): MsbError {
  return new MsbError(
    "AUTH_INVALID",
    "The API key is malformed (an msb key looks like msb_<payload>.<signature>); it may have been cut off when it was copied. Create a new key with 'msb server keygen'.",
    { details: { reason: "malformed" } },
  );
}

function parsePayload(body: string): Payload | undefined {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(body, "base64url").toString("utf8"));
  } catch {
    return undefined;
  }
  if (value === null || typeof value !== "object") return undefined;
  const p = value as Record<string, unknown>;
  const okNs =
    typeof p["ns"] === "string" && (p["ns"] === ALL_NAMESPACES || NAME_PATTERN.test(p["ns"]));
  const okExp = p["exp"] === undefined || Number.isSafeInteger(p["exp"]);
  if (
    p["v"] !== 1 ||
    !okNs ||
    !Number.isSafeInteger(p["iat"]) ||
    !okExp ||
    typeof p["jti"] !== "string"
  ) {
    return undefined;
  }
  return value as Payload;
}
