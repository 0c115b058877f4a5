import { MsbError } from "@msb/errors";
import { z } from "zod";

/** `image.pull` / `image.build` answers (docs/api.md). */
export const imageSummarySchema = z
  .object({
    reference: z.string(),
    digest: z.string(),
    platform: z.string().optional(),
    size_bytes: z.number(),
    stored_at: z.string().nullable().optional(),
    layers: z.array(z.object({ digest: z.string(), size_bytes: z.number() })).optional(),
  })
  .passthrough();
export type ImageSummary = z.infer<typeof imageSummarySchema>;

export const imageListSchema = z.object({
  images: z.array(
    z
      .object({
        reference: z.string(),
        digest: z.string(),
        size_bytes: z.number(),
        stored_at: z.string().nullable().optional(),
      })
      .passthrough(),
  ),
});

export const pushResultSchema = z
  .object({ reference: z.string(), target: z.string(), digest: z.string() })
  .passthrough();

/** Parses an answer; a shape this CLI does not know means mismatched versions. */
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
