import { MsbError } from "@msb/errors";

const NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;

/** Turns `K=V` strings into a record; later entries win. Names must be shell-safe. */
export function parseEnv(pairs: readonly string[], field: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const pair of pairs) {
    const eq = pair.indexOf("=");
    const name = eq > 0 ? pair.slice(0, eq) : "";
    if (!NAME.test(name) || pair.includes("\0")) {
      throw new MsbError(
        "INVALID_PARAMS",
        `${field}: '${pair.slice(0, 80)}' is not NAME=value (NAME: letters, digits, '_').`,
        { details: { field } },
      );
    }
    env[name] = pair.slice(eq + 1);
  }
  return env;
}
