import { readFileSync } from "node:fs";
import { Command, Option } from "commander";
import { MsbError } from "@msb/errors";
import { printJson, type CliDeps } from "../../cli/context.js";
import { globalOptions } from "../../cli/globals.js";
import {
  addSandbox,
  parseSandboxfile,
  sandboxfilePath,
  writeAtomic,
  type SandboxEntry,
} from "../../project/sandboxfile.js";
import {
  collect,
  ENV_PATTERN,
  parseName,
  parsePositive,
  PORT_PATTERN,
  SCRIPT_PATTERN,
  VOLUME_PATTERN,
  withFileOption,
} from "./shared.js";

export interface AddOptions {
  readonly file?: string;
  readonly image: string;
  readonly port?: string[];
  readonly env?: string[];
  readonly volume?: string[];
  readonly memory?: number;
  readonly cpus?: number;
  readonly workdir?: string;
  readonly shell?: string;
  readonly script?: string[];
  readonly dependsOn?: string[];
}

/** The Sandboxfile entry `msb add` writes for these flags (keys in documentation order). */
export function entryFromOptions(options: AddOptions): SandboxEntry {
  const scripts: Record<string, string> = {};
  for (const s of options.script ?? []) {
    const at = s.indexOf("=");
    scripts[s.slice(0, at)] = s.slice(at + 1);
  }
  return {
    image: options.image,
    ...(options.memory === undefined ? {} : { memory: options.memory }),
    ...(options.cpus === undefined ? {} : { cpus: options.cpus }),
    ...(options.volume === undefined ? {} : { volumes: options.volume }),
    ...(options.port === undefined ? {} : { ports: options.port }),
    ...(options.env === undefined ? {} : { envs: options.env }),
    ...(options.workdir === undefined ? {} : { workdir: options.workdir }),
    ...(options.shell === undefined ? {} : { shell: options.shell }),
    ...(options.script === undefined ? {} : { scripts }),
    ...(options.dependsOn === undefined ? {} : { depends_on: options.dependsOn }),
  };
}

export function addCommand(deps: CliDeps): Command {
  return withFileOption(
    new Command("add")
      .description("add sandboxes to the Sandboxfile (comments and order are kept)")
      .argument("<names...>", "sandbox names (each gets the same settings)"),
  )
    .requiredOption("--image <ref>", "OCI image, e.g. microsandbox/python or node:18")
    .option(
      "-p, --port <host:guest>",
      "publish a port (repeatable)",
      collect(PORT_PATTERN, "HOST:GUEST, e.g. 8080:80"),
    )
    .option(
      "-e, --env <K=V>",
      "environment variable (repeatable)",
      collect(ENV_PATTERN, "KEY=value"),
    )
    .option(
      "-v, --volume <host:guest>",
      "mount a host directory (repeatable; relative host paths are relative to the Sandboxfile)",
      collect(VOLUME_PATTERN, "HOST:/GUEST[:ro], e.g. ./data:/data"),
    )
    .option("--memory <MiB>", "memory in MiB (server default 512)", parsePositive)
    .option("--cpus <n>", "virtual CPUs (server default 1)", parsePositive)
    .option("--workdir <path>", "working directory in the guest")
    .option("--shell <path>", "shell that runs the scripts (default /bin/sh)")
    .option(
      "--script <name=cmd>",
      'a script, e.g. start="python3 app.py" (repeatable)',
      collect(SCRIPT_PATTERN, "NAME=command"),
    )
    .addOption(
      new Option("--depends-on <name>", "start after this sandbox (repeatable)").argParser(
        (v: string, prev: string[] = []) => [...prev, parseName(v)],
      ),
    )
    .addHelpText(
      "after",
      `
Examples:
  msb add app --image node:18
  msb add web --image nginx:alpine --port 8080:80 --env NODE_ENV=production
  msb add database --image postgres:15 --volume ./data:/var/lib/postgresql/data --memory 512 --cpus 2
  msb add app --image microsandbox/python --port 18080:8000 --script start="python3 -m http.server 8000"

Exit codes: 0 added · 2 bad flag, name already in the file, or the result would be invalid · 4 no Sandboxfile (run \`msb init\`).`,
    )
    .action((names: string[], options: AddOptions, cmd: Command) => {
      const global = globalOptions(cmd, deps.env);
      const file = sandboxfilePath(options.file, process.cwd());
      let text: string;
      try {
        text = readFileSync(file, "utf8");
      } catch (err) {
        throw new MsbError(
          "FILE_NOT_FOUND",
          `no Sandboxfile at ${file}. Create one with \`msb init\` (or point at one with --file PATH).`,
          { cause: err, details: { file } },
        );
      }
      const entry = entryFromOptions(options);
      const known = new Set([
        ...parseSandboxfile(text, file).sandboxes.map((s) => s.name),
        ...names,
      ]);
      const unknown = (options.dependsOn ?? []).filter((d) => !known.has(d));
      if (unknown.length > 0) {
        throw new MsbError(
          "INVALID_PARAMS",
          `--depends-on ${unknown.join(", ")}: no such sandbox in ${file} (known: ${[...known].join(", ")}). Add it first with \`msb add\`.`,
          { details: { file, dependsOn: unknown } },
        );
      }
      for (const name of names) text = addSandbox(text, file, parseName(name), entry);
      writeAtomic(file, text);
      if (global.json) printJson(deps.io, { file, added: names, entry });
      else deps.io.out(`added ${names.join(", ")} to ${file}\n`);
    });
}
