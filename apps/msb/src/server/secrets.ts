import { loadOrCreateServerSecret } from "@msb/keys";
import { deriveServerSecret } from "./secret.js";

/**
 * The secret API keys are signed with, as the server sees it: `--key` (derived), else
 * `MSB_SERVER_SECRET` (derived the same way), else `$MSB_HOME/server.key` (created on first use).
 */
export async function resolveSigningSecret(
  key: string | undefined,
  env: NodeJS.ProcessEnv,
  home: string,
): Promise<string> {
  const given = key ?? env["MSB_SERVER_SECRET"];
  return given === undefined ? loadOrCreateServerSecret(home) : deriveServerSecret(given);
}
