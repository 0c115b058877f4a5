import { randomBytes } from "node:crypto";
import { MsbError } from "@msb/errors";
import { describe, expect, it } from "vitest";
import { createApiKey, verifyApiKey } from "./index.js";

const secret = randomBytes(32).toString("hex");
const T0 = Date.UTC(2026, 0, 1);

function reasonOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(MsbError);
    expect((err as MsbError).code).toBe("AUTH_INVALID");
    return (err as MsbError).details["reason"];
  }
  throw new Error("expected AUTH_INVALID");
}

describe("API keys", () => {
  it("round-trips the namespace, issue time and expiry", () => {
    const key = createApiKey(secret, { namespace: "team-a", expiresInMs: 60_000, now: T0 });
    expect(key).toMatch(/^msb_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/);
    const granted = verifyApiKey(secret, key, T0 + 1_000);
    expect(granted).toMatchObject({ namespace: "team-a", issuedAt: T0, expiresAt: T0 + 60_000 });
    expect(granted.keyId).toMatch(/^[A-Za-z0-9_-]{16}$/);
  });

  it("issues all-namespace keys without expiry", () => {
    const key = createApiKey(secret, { namespace: "*" });
    expect(verifyApiKey(secret, key)).toMatchObject({ namespace: "*", expiresAt: null });
  });

  it("gives every key its own id", () => {
    const a = createApiKey(secret, { namespace: "*", now: T0 });
    const b = createApiKey(secret, { namespace: "*", now: T0 });
    expect(a).not.toBe(b);
  });

  it("rejects a key once it expired, and says when", () => {
    const key = createApiKey(secret, { namespace: "*", expiresInMs: 1_000, now: T0 });
    expect(verifyApiKey(secret, key, T0 + 999).namespace).toBe("*");
    expect(reasonOf(() => verifyApiKey(secret, key, T0 + 1_000))).toBe("expired");
    expect(() => verifyApiKey(secret, key, T0 + 1_000)).toThrow(
      /expired at 2026-01-01T00:00:01.000Z/,
    );
  });

  it("rejects a key whose payload was altered (e.g. to widen its namespace)", () => {
    const key = createApiKey(secret, { namespace: "team-a", now: T0 });
    const [body, sig] = key.slice(4).split(".") as [string, string];
    const payload = JSON.parse(Buffer.from(body, "base64url").toString()) as Record<
      string,
      unknown
    >;
    payload["ns"] = "*";
    const forged = `msb_${Buffer.from(JSON.stringify(payload)).toString("base64url")}.${sig}`;
    expect(reasonOf(() => verifyApiKey(secret, forged, T0))).toBe("signature");
  });

  it("rejects a key signed by another server", () => {
    const foreign = createApiKey(randomBytes(32).toString("hex"), { namespace: "*" });
    expect(reasonOf(() => verifyApiKey(secret, foreign))).toBe("signature");
    expect(() => verifyApiKey(secret, foreign)).toThrow(/another msb server/);
  });

  it.each([
    "",
    "msb_",
    "msb_abc",
    "abc.def",
    "msb_a.b.c",
    "msb_!!.??",
    `msb_${"a".repeat(2000)}.b`,
  ])("rejects the malformed key %j", (key) => {
    expect(reasonOf(() => verifyApiKey(secret, key))).toMatch(/malformed|signature/);
  });

  it("refuses to issue keys for invalid namespaces or lifetimes", () => {
    expect(() => createApiKey(secret, { namespace: "../etc" })).toThrow(/Invalid namespace/);
    expect(() => createApiKey(secret, { namespace: "a", expiresInMs: 0 })).toThrow(/lifetime/);
  });

  it("accepts only the canonical encoding: a key with its last character changed is rejected", () => {
    const key = createApiKey(secret, { namespace: "team-a", now: T0 });
    const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // Every other last character: some decode to the same signature bytes (the low bits of
    // the last base64url character are padding), and must still be refused.
    for (const c of alphabet) {
      if (c === key.at(-1)) continue;
      const changed = key.slice(0, -1) + c;
      expect(() => verifyApiKey(secret, changed, T0), changed).toThrow(MsbError);
    }
  });

  it("calls garbage malformed, not a bad signature", () => {
    for (const garbage of ["msb_abc.def", "msb_aGVsbG8.d29ybGQ", "msb_e30.AAAA", "msb_x.y"]) {
      expect(
        reasonOf(() => verifyApiKey(secret, garbage, T0)),
        garbage,
      ).toBe("malformed");
    }
  });
});
