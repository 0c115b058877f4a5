import { MsbError } from "@msb/errors";
import { NAME_PATTERN } from "@msb/keys";
import { z } from "zod";

/**
 * Parameters of the sandbox methods (SPEC.md), shared by the JSON-RPC and MCP adapters so
 * both accept exactly the same input. Unknown keys are ignored (clients written for the
 * original send a few extra ones); known keys are checked strictly.
 */

const NAME_RULE =
  "must start with a letter or digit and contain only letters, digits, '_' or '-' (at most 63 characters)";

const name = (what: string) =>
  z
    .string({ required_error: "is required", invalid_type_error: `must be a string (the ${what})` })
    .regex(NAME_PATTERN, NAME_RULE);

const namespace = name("namespace").default("default");

/**
 * Seconds, as the SDKs send them (`timeout=2`). Bounded here so that no number reaches a
 * uint32 millisecond field of the gRPC API (4294968 s overflowed it and answered INTERNAL);
 * the server's own limits (MSB_RUN_TIMEOUT_MAX_MS) are checked by the service.
 */
const timeoutSeconds = (maxSeconds: number) =>
  z
    .number({ invalid_type_error: "must be a number of seconds" })
    .positive("must be more than 0 seconds")
    .max(maxSeconds, `must be at most ${maxSeconds} seconds`)
    .optional();

/** A run's timeout: at most a day (MSB_RUN_TIMEOUT_MAX_MS may allow less). */
const runTimeoutSeconds = timeoutSeconds(86_400);

export const sandboxConfigSchema = z.object({
  image: z
    .string({ required_error: "is required", invalid_type_error: "must be a string" })
    .min(1, "must not be empty")
    .max(512, "is longer than 512 characters"),
  memory: z
    .number({ invalid_type_error: "must be a number of MiB" })
    .int("must be a whole number of MiB")
    .min(64, "must be at least 64 MiB")
    .max(1024 * 1024, "must be at most 1048576 MiB")
    .default(512),
  cpus: z
    .number({ invalid_type_error: "must be a number" })
    .int("must be a whole number")
    .min(1, "must be at least 1")
    .max(1024, "must be at most 1024")
    .default(1),
  envs: z
    .array(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*=/, "must look like KEY=VALUE"))
    .max(1000)
    .default([]),
  workdir: z.string().startsWith("/", "must be an absolute guest path").optional(),
  volumes: z
    .array(z.string(), { invalid_type_error: 'must be a list of "host:guest"' })
    .default([]),
  ports: z.array(z.string(), { invalid_type_error: 'must be a list of "host:guest"' }).default([]),
  network: z.enum(["none", "public", "any"]).default("public"),
  scripts: z.record(z.string()).optional(),
  exec: z.string().optional(),
  /** Boot deadline in seconds (at most an hour); not part of the sandbox's identity. */
  timeout: timeoutSeconds(3_600),
});

export type SandboxConfigInput = z.infer<typeof sandboxConfigSchema>;

export const startParamsSchema = z.object({
  sandbox: name("sandbox name"),
  namespace,
  config: sandboxConfigSchema.optional(),
  /**
   * Answer with an object (message, start_kind, boot_ms, …) instead of the SPEC's sentence.
   * Opt-in so that clients comparing the sentence keep working.
   */
  details: z.boolean({ invalid_type_error: "must be true or false" }).optional(),
});
export type StartParams = z.infer<typeof startParamsSchema>;

export const stopParamsSchema = z.object({
  sandbox: name("sandbox name"),
  namespace,
  /**
   * Also delete the sandbox: its scratch disk and its record (it is then unknown, as if never
   * started). Default false: a stopped sandbox keeps its files for the next start.
   */
  remove: z.boolean({ invalid_type_error: "must be true or false" }).default(false),
});
export type StopParams = z.infer<typeof stopParamsSchema>;

export const metricsParamsSchema = z.object({
  namespace: z.union([z.literal("*"), name("namespace")]).default("default"),
  sandbox: name("sandbox name").optional(),
});
export type MetricsParams = z.infer<typeof metricsParamsSchema>;

export const runCodeParamsSchema = z.object({
  sandbox: name("sandbox name"),
  namespace,
  language: z.enum(["python", "node", "nodejs", "javascript"], {
    errorMap: () => ({ message: "must be one of python, node, nodejs, javascript" }),
  }),
  code: z.string({ required_error: "is required", invalid_type_error: "must be a string" }),
  timeout: runTimeoutSeconds,
});
export type RunCodeParams = z.infer<typeof runCodeParamsSchema>;

export const runCommandParamsSchema = z.object({
  sandbox: name("sandbox name"),
  namespace,
  command: z
    .string({ required_error: "is required", invalid_type_error: "must be a string" })
    .min(1, "must not be empty"),
  args: z.array(z.string({ invalid_type_error: "must be a string" })).default([]),
  timeout: runTimeoutSeconds,
});
export type RunCommandParams = z.infer<typeof runCommandParamsSchema>;

const cells = (what: string) =>
  z
    .number({ required_error: "is required", invalid_type_error: `must be a number of ${what}` })
    .int(`must be a whole number of ${what}`)
    .min(1, `must be at least 1`)
    .max(1000, `must be at most 1000`);

/** A terminal size in character cells. */
export const terminalSizeSchema = z.object({ rows: cells("rows"), cols: cells("columns") });

/** The `start` message of an attach session (docs/api.md, "Interactive sessions"). */
export const attachParamsSchema = z.object({
  sandbox: name("sandbox name"),
  namespace,
  command: z
    .string({ invalid_type_error: "must be a string" })
    .min(1, "must not be empty")
    .default("/bin/sh"),
  args: z.array(z.string({ invalid_type_error: "must be a string" })).default([]),
  env: z
    .array(
      z
        .string({ invalid_type_error: "must be a string" })
        .regex(/^[A-Za-z_][A-Za-z0-9_]*=/, "must be NAME=value"),
    )
    .default([]),
  workdir: z.string({ invalid_type_error: "must be a string" }).default(""),
  pty: terminalSizeSchema.optional(),
});
export type AttachParams = z.infer<typeof attachParamsSchema>;

/** Largest file `sandbox.files.read` returns and `sandbox.files.write` takes (the vmm-agent's cap). */
export const FILE_LIMIT_BYTES = 16 * 1024 * 1024;

const guestPath = z
  .string({ required_error: "is required", invalid_type_error: "must be a string" })
  .startsWith("/", "must be an absolute guest path")
  .max(4096, "is longer than 4096 characters");

export const filesWriteParamsSchema = z.object({
  sandbox: name("sandbox name"),
  namespace,
  path: guestPath,
  data: z
    .string({ required_error: "is required", invalid_type_error: "must be a base64 string" })
    .regex(/^[A-Za-z0-9+/]*={0,2}$/, "must be base64 (standard alphabet)")
    .refine((d) => d.replace(/=+$/, "").length % 4 !== 1, "is not valid base64 (bad length)")
    .refine(
      (d) => Math.floor((d.replace(/=+$/, "").length * 3) / 4) <= FILE_LIMIT_BYTES,
      `decodes to more than ${FILE_LIMIT_BYTES} bytes (16 MiB), the most one call may write`,
    ),
  encoding: z.literal("base64").default("base64"),
  mode: z
    .number()
    .int()
    .min(0)
    .max(0o7777, "must be permission bits (at most 0o7777)")
    .default(0o644),
  create_parents: z.boolean().default(true),
});
export type FilesWriteParams = z.infer<typeof filesWriteParamsSchema>;

export const filesReadParamsSchema = z.object({
  sandbox: name("sandbox name"),
  namespace,
  path: guestPath,
  max_bytes: z
    .number()
    .int("must be a whole number")
    .positive("must be more than 0")
    .max(FILE_LIMIT_BYTES, `must be at most ${FILE_LIMIT_BYTES} (16 MiB)`)
    .default(FILE_LIMIT_BYTES),
  encoding: z.literal("base64").default("base64"),
});
export type FilesReadParams = z.infer<typeof filesReadParamsSchema>;

/** One rejected field: `config.memory`, `args[2]`, or `params` for the whole object. */
export interface ParamIssue {
  readonly field: string;
  readonly message: string;
}

/**
 * Validates method parameters. Anything that is not an object, or fails the schema, is
 * INVALID_PARAMS whose message names each field and why, and `details.issues` lists them.
 */
export function parseParams<S extends z.ZodTypeAny>(schema: S, input: unknown): z.output<S> {
  const value = input === undefined || input === null ? {} : input;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw invalidParams([
      { field: "params", message: "must be an object of named parameters (not a list)" },
    ]);
  }
  const result = schema.safeParse(value);
  if (result.success) return result.data as z.output<S>;
  throw invalidParams(
    result.error.issues.map((issue) => ({
      field: formatPath(issue.path),
      message: issue.message === "Required" ? "is required" : issue.message,
    })),
  );
}

export function invalidParams(issues: readonly ParamIssue[]): MsbError {
  const list = issues.map((i) => `${i.field} ${i.message}`).join("; ");
  return new MsbError("INVALID_PARAMS", `Invalid params: ${list}.`, { details: { issues } });
}

function formatPath(path: readonly (string | number)[]): string {
  if (path.length === 0) return "params";
  return path.reduce<string>(
    (acc, part) =>
      typeof part === "number" ? `${acc}[${part}]` : acc === "" ? part : `${acc}.${part}`,
    "",
  );
}
