/**
 * `--key K` → the 32-byte server secret as 64 hex characters: `deriveServerSecret` from
 * `@msb/keys` (64 hex characters are kept, anything else is SHA-256'd), the same function the
 * control plane applies to `MSB_SERVER_KEY`, so both sides always agree.
 */
export { deriveServerSecret } from "@msb/keys";

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
