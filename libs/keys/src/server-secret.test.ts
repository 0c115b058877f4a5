import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { createApiKey, deriveServerSecret, verifyApiKey } from "./index.js";

describe("deriveServerSecret", () => {
  it("keeps a 64-hex secret and hashes a passphrase", () => {
    const hex = "AB".repeat(32);
    expect(deriveServerSecret(` ${hex} `)).toBe(hex.toLowerCase());
    expect(deriveServerSecret("mySecretKey123")).toBe(
      createHash("sha256").update("mySecretKey123").digest("hex"),
    );
  });

  it("lets every process that derives from the same --key verify the same keys", () => {
    const key = createApiKey(deriveServerSecret("mySecretKey123"), { namespace: "*" });
    expect(verifyApiKey(deriveServerSecret("mySecretKey123"), key).namespace).toBe("*");
  });
});
