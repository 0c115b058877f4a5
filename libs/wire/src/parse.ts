import { MsbError } from "@msb/errors";
import type { z } from "zod";

/** Parses an answer; a shape this client does not know means mismatched versions. */
export function parseAnswer<S extends z.ZodTypeAny>(
  schema: S,
  method: string,
  raw: unknown,
): z.output<S> {
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data as z.output<S>;
  throw new MsbError(
    "SERVICE_UNAVAILABLE",
    `the server answered ${method} in an unexpected shape. Next step: check that \`msb\` and the server are the same version (\`msb server status\`).`,
    { cause: parsed.error },
  );
}
