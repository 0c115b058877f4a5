import { z } from "zod";

// Results of the JSON-RPC methods as clients read them (docs/api.md). Fields the server added
// over time are optional so a client also reads an older server; objects strip unknown keys
// unless a client asks for `.passthrough()`.

/** One chunk of a run's output, in order. */
export const outputChunkSchema = z.object({ stream: z.string(), text: z.string() });
export type OutputChunk = z.infer<typeof outputChunkSchema>;

/** `sandbox.command.run` (and the output part of `sandbox.repl.run`). */
export const commandResultSchema = z.object({
  exit_code: z.number().nullable().optional(),
  success: z.boolean().optional(),
  output: z.array(outputChunkSchema).default([]),
  truncated: z.boolean().optional(),
});
export type CommandResult = z.infer<typeof commandResultSchema>;

/** `sandbox.repl.run`. */
export const replResultSchema = z.object({
  status: z.string(),
  output: z.array(outputChunkSchema).default([]),
  truncated: z.boolean().optional(),
});
export type ReplResult = z.infer<typeof replResultSchema>;

/** `sandbox.start` with `details: true` (without it the answer is a sentence). */
export const startDetailsSchema = z.object({
  message: z.string(),
  namespace: z.string().optional(),
  sandbox: z.string().optional(),
  image: z.string().optional(),
  already_running: z.boolean().optional(),
  /** "cold", "template" or "pool". */
  start_kind: z.string().nullable(),
  boot_ms: z.number().nullable(),
});
export type StartDetails = z.infer<typeof startDetailsSchema>;

/** One sandbox of `sandbox.metrics.get`. */
export const sandboxMetricsSchema = z.object({
  namespace: z.string(),
  name: z.string(),
  running: z.boolean(),
  cpu_usage: z.number().nullable().optional(),
  memory_usage: z.number().nullable().optional(),
  disk_usage: z.number().nullable().optional(),
  state: z.string().nullable().optional(),
  reason: z.string().nullable().optional(),
  image: z.string().nullable().optional(),
  /** "cold", "template" or "pool" (servers before the warm pool do not send it). */
  start_kind: z.string().nullable().optional(),
  boot_ms: z.number().nullable().optional(),
  paused: z.boolean().optional(),
});
export type SandboxMetrics = z.infer<typeof sandboxMetricsSchema>;

export const metricsResultSchema = z.object({ sandboxes: z.array(sandboxMetricsSchema) });

/** Start counters of the vmm agent since it started. */
export const startCountersSchema = z.object({
  pool_hits: z.number(),
  pool_misses: z.number(),
  template_restores: z.number(),
  cold_boots: z.number(),
});
export type StartCounters = z.infer<typeof startCountersSchema>;

/** One template snapshot (and its warm pool) as health reports it. */
export const templateHealthSchema = z.object({
  key: z.string(),
  image: z.string(),
  memory_mib: z.number(),
  vcpus: z.number(),
  state: z.string(),
  reason: z.string(),
  warm_language: z.string(),
  pool_ready: z.number(),
  pool_target: z.number(),
  build_ms: z.number(),
});
export type TemplateHealth = z.infer<typeof templateHealthSchema>;

/** `services.vmm` of `/api/v1/health`: VM counts, start counters and templates. */
export const vmmHealthSchema = z.object({
  vms_running: z.number().optional(),
  max_vms: z.number().optional(),
  vms_paused: z.number().optional(),
  starts: startCountersSchema.optional(),
  templates: z.array(templateHealthSchema).optional(),
});
export type VmmHealth = z.infer<typeof vmmHealthSchema>;

/** `GET /api/v1/health`: every field beyond `message` may be absent (or hidden without a key). */
export const healthSchema = z
  .object({
    message: z.string(),
    accelerator: z.string().optional(),
    services: z.object({ vmm: vmmHealthSchema.optional() }).passthrough().optional(),
  })
  .passthrough();
export type Health = z.infer<typeof healthSchema>;

/** `image.pull` / `image.build` answers. */
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

/** `image.list`. */
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

/** `image.push`. */
export const pushResultSchema = z
  .object({ reference: z.string(), target: z.string(), digest: z.string() })
  .passthrough();
