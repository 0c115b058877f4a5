import { existsSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";
import { MsbError } from "@msb/errors";
import { isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, type Document } from "yaml";
import { z } from "zod";

/** SPEC.md's rule for sandbox and namespace names. */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;
export const SANDBOXFILE_NAME = "Sandboxfile";
/** Shell that runs `scripts` when a sandbox does not name one. */
export const DEFAULT_SHELL = "/bin/sh";

const nameSchema = z.string().regex(NAME_PATTERN, {
  message: "must match ^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$",
});
const mapping = (what: string, pattern: RegExp) =>
  z.string().regex(pattern, { message: `must look like ${what}` });

const sandboxSchema = z
  .object({
    image: z.string().min(1, { message: "must name an image, e.g. microsandbox/python" }),
    memory: z.number().int().positive({ message: "must be a whole number of MiB" }).optional(),
    cpus: z.number().int().positive({ message: "must be a whole number of CPUs" }).optional(),
    volumes: z
      .array(mapping('"host:guest" or "host:guest:ro"', /^[^:]+:\/[^:]*(:ro)?$/))
      .optional(),
    ports: z
      .array(mapping('"host:guest" or "host:guest/udp"', /^\d+:\d+(\/(tcp|udp))?$/))
      .optional(),
    envs: z.array(mapping('"KEY=value"', /^[A-Za-z_][A-Za-z0-9_]*=/)).optional(),
    workdir: z.string().startsWith("/", { message: "must be an absolute guest path" }).optional(),
    shell: z.string().min(1).optional(),
    scripts: z.record(nameSchema, z.string()).optional(),
    depends_on: z.array(nameSchema).optional(),
  })
  .strict();

const fileSchema = z
  .object({
    meta: z
      .object({
        name: z.string().optional(),
        description: z.string().optional(),
        version: z.union([z.string(), z.number()]).optional(),
      })
      .strict()
      .optional(),
    // `sandboxes:` with nothing under it (the starter file) is an empty project.
    sandboxes: z.preprocess((v) => v ?? {}, z.record(nameSchema, sandboxSchema)),
  })
  .strict();

export type SandboxSpec = z.infer<typeof sandboxSchema>;

/** One sandbox of a project, with defaults applied and host paths resolved. */
export interface ProjectSandbox {
  readonly name: string;
  readonly image: string;
  readonly memory?: number;
  readonly cpus?: number;
  /** `host:guest[:ro]`, host path absolute (relative ones resolved against the file's dir). */
  readonly volumes: readonly string[];
  readonly ports: readonly string[];
  readonly envs: readonly string[];
  readonly workdir?: string;
  readonly shell: string;
  readonly scripts: Readonly<Record<string, string>>;
  readonly dependsOn: readonly string[];
}

export interface Project {
  /** Absolute path of the Sandboxfile. */
  readonly file: string;
  readonly dir: string;
  /** In file order. */
  readonly sandboxes: readonly ProjectSandbox[];
}

/** The `config` of `sandbox.start` for a project sandbox (what `apply` compares). */
export interface StartConfig {
  image: string;
  memory?: number;
  cpus?: number;
  volumes: string[];
  ports: string[];
  envs: string[];
  workdir?: string;
  scripts: Record<string, string>;
}

export function startConfigOf(sb: ProjectSandbox): StartConfig {
  return {
    image: sb.image,
    ...(sb.memory === undefined ? {} : { memory: sb.memory }),
    ...(sb.cpus === undefined ? {} : { cpus: sb.cpus }),
    volumes: [...sb.volumes],
    ports: [...sb.ports],
    envs: [...sb.envs],
    ...(sb.workdir === undefined ? {} : { workdir: sb.workdir }),
    scripts: { ...sb.scripts },
  };
}

/**
 * `--file PATH` (or nothing = the current directory) → the Sandboxfile's absolute path: a
 * directory means `DIR/Sandboxfile`, anything else is the file itself.
 */
export function sandboxfilePath(given: string | undefined, cwd: string): string {
  const path = resolve(cwd, given ?? ".");
  if (given === undefined) return join(path, SANDBOXFILE_NAME);
  if (existsSync(path) && statSync(path).isDirectory()) return join(path, SANDBOXFILE_NAME);
  if (!existsSync(path) && basename(path) !== SANDBOXFILE_NAME && given.endsWith("/")) {
    return join(path, SANDBOXFILE_NAME);
  }
  return path;
}

function invalid(file: string, line: number | undefined, field: string, message: string) {
  const where = line === undefined ? file : `${file}:${line}`;
  return new MsbError(
    "SANDBOXFILE_INVALID",
    `${where}: ${field === "" ? "" : `${field}: `}${message}. Fix the Sandboxfile (see docs/sandboxfile.md) and run the command again.`,
    { details: { file, ...(line === undefined ? {} : { line }), field } },
  );
}

/** The 1-based line of the node at `path` (or of the key `key` inside it), or the nearest parent. */
function lineOf(
  doc: Document,
  counter: LineCounter,
  path: readonly (string | number)[],
  key?: string,
): number | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node: unknown = n === 0 ? doc.contents : doc.getIn(path.slice(0, n), true);
    if (node === undefined || node === null) continue;
    if (key !== undefined && n === path.length && isMap(node)) {
      const pair = node.items.find((p) => isScalar(p.key) && String(p.key.value) === key);
      const range = isScalar(pair?.key) ? pair.key.range : undefined;
      if (range) return counter.linePos(range[0]).line;
    }
    // A record key that failed validation: point at the key, not its value.
    const range = (node as { range?: [number, number, number] }).range;
    if (range) return counter.linePos(range[0]).line;
  }
  return undefined;
}

function fieldName(path: readonly (string | number)[]): string {
  return path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");
}

/** Parses and validates Sandboxfile text; every error names `file`, the line and the field. */
export function parseSandboxfile(text: string, file: string): Project {
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter });
  const syntax = doc.errors[0];
  if (syntax !== undefined) {
    const line = syntax.linePos?.[0].line;
    throw invalid(file, line, "", `not valid YAML (${syntax.message.split("\n")[0] ?? ""})`);
  }
  const raw: unknown = doc.toJS() ?? {};
  const parsed = fileSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    if (issue === undefined) throw invalid(file, undefined, "", "invalid");
    const path = issue.path;
    if (issue.code === "unrecognized_keys") {
      const key = issue.keys[0] ?? "";
      const allowed =
        path.length === 0
          ? "meta, sandboxes"
          : path.length === 1
            ? "name, description, version"
            : Object.keys(sandboxSchema.shape).join(", ");
      throw invalid(
        file,
        lineOf(doc, counter, path, key),
        fieldName([...path, key]),
        `unknown key (allowed: ${allowed})`,
      );
    }
    // A bad record key (a sandbox name) is reported at the key itself.
    const isKeyIssue = issue.code === "invalid_string" && path.length === 2;
    const line = isKeyIssue
      ? lineOf(doc, counter, path.slice(0, 1), String(path[1]))
      : lineOf(doc, counter, path);
    const message =
      issue.code === "invalid_type"
        ? `expected ${issue.expected}, got ${issue.received}`
        : isKeyIssue
          ? `sandbox name ${issue.message}`
          : issue.message;
    throw invalid(file, line, fieldName(path), message);
  }
  const dir = dirname(file);
  const sandboxes = Object.entries(parsed.data.sandboxes).map(([name, spec]): ProjectSandbox => ({
    name,
    image: spec.image,
    ...(spec.memory === undefined ? {} : { memory: spec.memory }),
    ...(spec.cpus === undefined ? {} : { cpus: spec.cpus }),
    volumes: (spec.volumes ?? []).map((v) => resolveVolume(v, dir)),
    ports: spec.ports ?? [],
    envs: spec.envs ?? [],
    ...(spec.workdir === undefined ? {} : { workdir: spec.workdir }),
    shell: spec.shell ?? DEFAULT_SHELL,
    scripts: spec.scripts ?? {},
    dependsOn: spec.depends_on ?? [],
  }));
  const names = new Set(sandboxes.map((s) => s.name));
  for (const sb of sandboxes) {
    sb.dependsOn.forEach((dep, i) => {
      if (!names.has(dep)) {
        throw invalid(
          file,
          lineOf(doc, counter, ["sandboxes", sb.name, "depends_on", i]),
          `sandboxes.${sb.name}.depends_on[${i}]`,
          `no sandbox named "${dep}" in this file (known: ${[...names].join(", ") || "none"})`,
        );
      }
    });
  }
  const cycle = findCycle(sandboxes);
  if (cycle !== undefined) {
    const first = cycle[0] ?? "";
    throw invalid(
      file,
      lineOf(doc, counter, ["sandboxes", first, "depends_on"]),
      `sandboxes.${first}.depends_on`,
      `dependency cycle ${cycle.join(" -> ")}`,
    );
  }
  return { file, dir, sandboxes };
}

function resolveVolume(volume: string, dir: string): string {
  const at = volume.indexOf(":");
  const host = volume.slice(0, at);
  return isAbsolute(host) ? volume : `${resolve(dir, host)}${volume.slice(at)}`;
}

/** A dependency cycle as `[a, b, …, a]`, or undefined. */
export function findCycle(
  sandboxes: readonly Pick<ProjectSandbox, "name" | "dependsOn">[],
): string[] | undefined {
  const deps = new Map(sandboxes.map((s) => [s.name, s.dependsOn]));
  const state = new Map<string, "visiting" | "done">();
  const stack: string[] = [];
  const visit = (name: string): string[] | undefined => {
    const seen = state.get(name);
    if (seen === "done") return undefined;
    if (seen === "visiting") return [...stack.slice(stack.indexOf(name)), name];
    state.set(name, "visiting");
    stack.push(name);
    for (const dep of deps.get(name) ?? []) {
      const found = visit(dep);
      if (found) return found;
    }
    stack.pop();
    state.set(name, "done");
    return undefined;
  };
  for (const s of sandboxes) {
    const found = visit(s.name);
    if (found) return found;
  }
  return undefined;
}

/** Reads the project at `file`; a missing file says how to create one. */
export function loadProject(file: string): Project {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new MsbError(
        "FILE_NOT_FOUND",
        `no Sandboxfile at ${file}. Create one with \`msb init\` (or point at one with --file PATH).`,
        { cause: err, details: { file } },
      );
    }
    throw err;
  }
  return parseSandboxfile(text, file);
}

/** Writes `text` to `file` atomically (temp file in the same directory, then rename). */
export function writeAtomic(file: string, text: string): void {
  const temp = join(dirname(file), `.${basename(file)}.${process.pid}.tmp`);
  writeFileSync(temp, text);
  renameSync(temp, file);
}

/** The commented file `msb init` writes; `project` becomes `meta.name`. */
export function starterSandboxfile(project: string): string {
  return `# Sandboxfile: the sandboxes of this project (docs/sandboxfile.md).
# Add one with: msb add app --image microsandbox/python --port 18080:8000 \\
#                 --script start="python3 -m http.server 8000"
# Then: msb up --detach · msb status · msb log app · msb down
meta:
  name: ${JSON.stringify(project)}

sandboxes:
  # app:
  #   image: microsandbox/python   # OCI image reference
  #   memory: 512                  # MiB
  #   cpus: 1
  #   ports: ["18080:8000"]        # host:guest
  #   volumes: ["./data:/data"]    # host:guest, host relative to this file
  #   envs: ["MODE=dev"]
  #   workdir: /app
  #   scripts:
  #     start: python3 -m http.server 8000
  #   depends_on: [db]
`;
}

/** Options of `msb add`: one sandbox's entry as written to the file. */
export type SandboxEntry = SandboxSpec;

/**
 * Adds (or, with `replace`, replaces) sandbox `name` in Sandboxfile text, keeping comments and
 * key order; returns the new text, validated.
 */
export function addSandbox(text: string, file: string, name: string, entry: SandboxEntry): string {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) parseSandboxfile(text, file);
  if (doc.contents === null || !isMap(doc.contents)) {
    doc.contents = doc.createNode({ sandboxes: {} }) as unknown as typeof doc.contents;
  }
  const current = doc.get("sandboxes", true);
  if (!isMap(current) || current.items.length === 0) {
    // `sandboxes:` (null) or `sandboxes: {}`: a block map, keeping comments around it.
    const map = doc.createNode({});
    map.flow = false;
    if (current !== undefined && current !== null && typeof current === "object") {
      const old = current as { comment?: string | null; commentBefore?: string | null };
      if (old.comment) map.comment = old.comment;
      if (old.commentBefore) map.commentBefore = old.commentBefore;
    }
    doc.set("sandboxes", map);
  }
  if (doc.hasIn(["sandboxes", name])) {
    throw new MsbError(
      "INVALID_PARAMS",
      `sandbox "${name}" is already in ${file}. Remove it first (\`msb remove ${name}\`) or edit the file.`,
      { details: { file, sandbox: name } },
    );
  }
  const node = doc.createNode(entry);
  // Lists of mappings read best inline: ports: ["8080:80"].
  if (isMap(node)) {
    for (const pair of node.items) {
      if (isPair(pair) && isSeq(pair.value)) pair.value.flow = true;
    }
  }
  doc.setIn(["sandboxes", name], node);
  const out = doc.toString();
  parseSandboxfile(out, file);
  return out;
}

/** Removes sandboxes from Sandboxfile text (comments and order of the rest kept). */
export function removeSandboxes(text: string, file: string, names: readonly string[]): string {
  const project = parseSandboxfile(text, file);
  const known = new Set(project.sandboxes.map((s) => s.name));
  const missing = names.filter((n) => !known.has(n));
  if (missing.length > 0) {
    throw new MsbError(
      "SANDBOX_NOT_FOUND",
      `no sandbox ${missing.map((n) => `"${n}"`).join(", ")} in ${file} (known: ${[...known].join(", ") || "none"}). See \`msb list\`.`,
      { details: { file, sandboxes: missing } },
    );
  }
  const removing = new Set(names);
  for (const sb of project.sandboxes) {
    if (removing.has(sb.name)) continue;
    const broken = sb.dependsOn.filter((d) => removing.has(d));
    if (broken.length > 0) {
      throw new MsbError(
        "SANDBOXFILE_INVALID",
        `${file}: sandbox "${sb.name}" depends on ${broken.join(", ")}. Remove "${sb.name}" too, or drop it from its depends_on first.`,
        { details: { file, sandbox: sb.name, field: `sandboxes.${sb.name}.depends_on` } },
      );
    }
  }
  const doc = parseDocument(text);
  for (const name of names) doc.deleteIn(["sandboxes", name]);
  return doc.toString();
}
