import { z } from "zod";

// Server-sent events of a streamed JSON-RPC answer (docs/streaming.md): `output` (runs),
// `progress` (image.pull / image.build / image.push), and a final `result` holding the
// JSON-RPC response.

/** Names of the events a streamed answer carries. */
export const SSE_EVENTS = ["output", "progress", "result"] as const;
export type SseEventName = (typeof SSE_EVENTS)[number];

/** An `output` event: a chunk of a run's stdout or stderr as it is produced. */
export const outputEventSchema = z.object({
  stream: z.enum(["stdout", "stderr"]),
  text: z.string(),
});
export type OutputEvent = z.infer<typeof outputEventSchema>;

/** A `progress` event of an image operation; byte and item counts are 0 when unknown. */
export const progressEventSchema = z.object({
  phase: z.string(),
  digest: z.string(),
  current_bytes: z.number(),
  current_total_bytes: z.number(),
  done_bytes: z.number(),
  total_bytes: z.number(),
  done_items: z.number(),
  total_items: z.number(),
  message: z.string(),
});
export type ProgressEvent = z.infer<typeof progressEventSchema>;

/** The JSON-RPC response: in a `result` event, or as the whole body of a plain answer. */
export const rpcResponseSchema = z.object({
  jsonrpc: z.literal("2.0").optional(),
  id: z.union([z.string(), z.number(), z.null()]).optional(),
  result: z.unknown().optional(),
  error: z
    .object({
      code: z.number(),
      message: z.string(),
      data: z.record(z.unknown()).nullable().optional(),
    })
    .optional(),
});
export type RpcResponse = z.infer<typeof rpcResponseSchema>;
