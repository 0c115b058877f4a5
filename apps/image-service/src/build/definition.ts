import { readFile } from "node:fs/promises";
import { join, posix, relative, resolve } from "node:path";
import { MsbError } from "@msb/errors";
import { parse as parseYaml } from "yaml";
import { z, type ZodIssue } from "zod";

const absolutePath = z
  .string()
  .refine(
    (p) => posix.isAbsolute(p) && !p.split("/").includes(".."),
    "must be an absolute path without '..'",
  );
const packageName = z.string().regex(/^[a-z0-9][a-z0-9+.-]+$/, "is not a Debian package name");
const suite = z
  .string()
  .regex(/^[a-z][a-z0-9-]*$/, "is not a Debian suite name (bookworm, trixie, …)");

const baseSchema = z.union([
  z
    .object({
      debian: suite,
      /** mmdebstrap variant; default minbase. */
      variant: z
        .enum(["minbase", "apt", "essential", "required", "important", "standard"])
        .default("minbase"),
    })
    .strict(),
  z.object({ image: z.string().min(1) }).strict(),
]);

export const definitionSchema = z
  .object({
    name: z
      .string()
      .regex(
        /^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:\/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$/,
        "is not a repository name like microsandbox/python",
      ),
    tag: z
      .string()
      .regex(/^[\w][\w.-]{0,127}$/, "is not a valid tag")
      .default("latest"),
    description: z.string().optional(),
    base: baseSchema,
    packages: z.array(packageName).default([]),
    files: z
      .array(
        z
          .object({
            src: z.string().min(1),
            dest: absolutePath,
            mode: z
              .string()
              .regex(/^0?[0-7]{3,4}$/, 'is an octal mode like "0644"')
              .default("0644"),
          })
          .strict(),
      )
      .default([]),
    env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()).default({}),
    workdir: absolutePath.default("/"),
    cmd: z.array(z.string()).default([]),
    entrypoint: z.array(z.string()).default([]),
    labels: z.record(z.string()).default({}),
  })
  .strict()
  .superRefine((d, ctx) => {
    if ("image" in d.base && d.packages.length > 0) {
      ctx.addIssue({
        code: z.ZodIssueCode.custom,
        path: ["packages"],
        message: "needs a Debian base (base.debian): msb installs packages with mmdebstrap",
      });
    }
  });

/** A validated image definition (`images/<name>/image.yaml`, format in docs/images.md). */
export type ImageDefinition = z.infer<typeof definitionSchema>;

export interface LoadedDefinition {
  readonly dir: string;
  readonly file: string;
  readonly definition: ImageDefinition;
}

function describeIssue(issue: ZodIssue): string {
  const at = issue.path.length === 0 ? "top level" : issue.path.join(".");
  if (issue.code === z.ZodIssueCode.unrecognized_keys) {
    return `unknown key${issue.keys.length > 1 ? "s" : ""} ${issue.keys.map((k) => `'${k}'`).join(", ")} at ${at}`;
  }
  if (issue.code === z.ZodIssueCode.invalid_union) {
    const inner = issue.unionErrors.flatMap((e) => e.issues).map(describeIssue);
    return `${at}: ${inner.join("; or ")}`;
  }
  return `${at}: ${issue.message}`;
}

/** Validates a parsed YAML document; errors name the key and the file. */
export function validateDefinition(doc: unknown, file: string): ImageDefinition {
  const parsed = definitionSchema.safeParse(doc);
  if (!parsed.success) {
    const problems = parsed.error.issues.map(describeIssue);
    throw new MsbError(
      "IMAGE_DEFINITION_INVALID",
      `${file}: ${problems.join("; ")}. Fix it; the format is in docs/images.md.`,
      { details: { file, issues: problems } },
    );
  }
  return parsed.data;
}

/** Reads and validates `<dir>/image.yaml`. File sources must stay inside `dir`. */
export async function loadDefinition(dirText: string): Promise<LoadedDefinition> {
  const dir = resolve(dirText);
  const file = join(dir, "image.yaml");
  const shown = relative(process.cwd(), file) || file;
  const text = await readFile(file, "utf8").catch((err: NodeJS.ErrnoException) => {
    throw new MsbError(
      err.code === "ENOENT" ? "FILE_NOT_FOUND" : "IMAGE_DEFINITION_INVALID",
      `No readable image definition at ${shown} (${err.code ?? err.message}). Point at a directory holding image.yaml, e.g. images/python.`,
      { details: { file: shown } },
    );
  });
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new MsbError(
      "IMAGE_DEFINITION_INVALID",
      `${shown}: not valid YAML (${(err as Error).message.split("\n")[0] ?? ""}). Fix it; the format is in docs/images.md.`,
      { details: { file: shown } },
    );
  }
  const definition = validateDefinition(doc, shown);
  for (const f of definition.files) {
    const src = resolve(dir, f.src);
    if (relative(dir, src).startsWith("..")) {
      throw new MsbError(
        "IMAGE_DEFINITION_INVALID",
        `${shown}: files.src '${f.src}' is outside the definition directory. Keep the files an image needs beside its image.yaml.`,
        { details: { file: shown, src: f.src } },
      );
    }
  }
  return { dir, file: shown, definition };
}
