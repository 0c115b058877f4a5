import { loadOrCreateServerSecret } from "@msb/keys";
import { deriveServerSecret, secretFromEnv } from "./secret.js";

/**
 * The secret API keys are signed with, as the server sees it: `--key` (derived), else
 * `MSB_SERVER_KEY`/`MSB_SERVER_SECRET` (derived the same way), else `$MSB_HOME/server.key` (created on first use).
 */
export async function resolveSigningSecret(
  key: string | undefined,
  env: NodeJS.ProcessEnv,
  home: string,
): Promise<string> {
  const given = key ?? secretFromEnv(env);
  return given === undefined ? loadOrCreateServerSecret(home) : deriveServerSecret(given);
}
