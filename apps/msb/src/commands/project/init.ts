import { existsSync, mkdirSync } from "node:fs";
import { basename, dirname } from "node:path";
import { Command } from "commander";
import { MsbError } from "@msb/errors";
import { printJson, type CliDeps } from "../../cli/context.js";
import { globalOptions } from "../../cli/globals.js";
import { sandboxfilePath, starterSandboxfile, writeAtomic } from "../../project/sandboxfile.js";
import { withFileOption } from "./shared.js";

/** Writes a commented starter Sandboxfile; never overwrites one. Returns its path. */
export function runInit(file: string): string {
  if (existsSync(file)) {
    throw new MsbError(
      "INVALID_PARAMS",
      `${file} already exists; \`msb init\` never overwrites it. Edit it, or add sandboxes with \`msb add\`.`,
      { details: { file } },
    );
  }
  mkdirSync(dirname(file), { recursive: true });
  writeAtomic(file, starterSandboxfile(basename(dirname(file))));
  return file;
}

export function initCommand(deps: CliDeps): Command {
  return withFileOption(
    new Command("init").description("create a commented starter Sandboxfile (never overwrites)"),
  )
    .addHelpText(
      "after",
      `
Examples:
  msb init                          # ./Sandboxfile
  msb init --file /path/to/project/ # /path/to/project/Sandboxfile (directory created)

Exit codes: 0 created · 2 a Sandboxfile is already there.`,
    )
    .action((options: { file?: string }, cmd: Command) => {
      const global = globalOptions(cmd, deps.env);
      const file = runInit(sandboxfilePath(options.file, process.cwd()));
      if (global.json) printJson(deps.io, { file });
      else deps.io.out(`created ${file}\nnext: msb add app --image microsandbox/python\n`);
    });
}
