import { z } from "zod";

// Unknown keys are ignored, as for every JSON-RPC method (docs/api.md).

const reference = z
  .string()
  .trim()
  .min(1, "must name an image, e.g. microsandbox/python or 127.0.0.1:5000/team/app:1");

export const pullParamsSchema = z
  .object({
    reference,
    /** "linux/amd64" when absent. */
    platform: z.string().trim().min(1).optional(),
  })
export type PullParams = z.output<typeof pullParamsSchema>;

export const listParamsSchema = z.object({});

export const removeParamsSchema = z.object({ reference });
export type RemoveParams = z.output<typeof removeParamsSchema>;

export const buildParamsSchema = z
  .object({
    definition_dir: z.string().min(1, "must be the absolute path of an images/<name> directory"),
    tag: z.string().trim().min(1).optional(),
    no_cache: z.boolean().optional(),
  })
export type BuildParams = z.output<typeof buildParamsSchema>;

export const pushParamsSchema = z
  .object({
    reference,
    /** Where it goes; the local reference when absent. */
    target: z.string().trim().min(1).optional(),
  })
export type PushParams = z.output<typeof pushParamsSchema>;
