import { readFileSync } from "node:fs";
import { Command } from "commander";
import { MsbError } from "@msb/errors";
import { printJson, type CliDeps } from "../../cli/context.js";
import { globalOptions } from "../../cli/globals.js";
import { removeSandboxes, sandboxfilePath, writeAtomic } from "../../project/sandboxfile.js";
import { withFileOption } from "./shared.js";

export function removeCommand(deps: CliDeps): Command {
  return withFileOption(
    new Command("remove")
      .alias("rm")
      .description(
        "remove sandboxes from the Sandboxfile (running ones keep running: `msb apply` stops them)",
      )
      .argument("<names...>", "sandbox names"),
  )
    .addHelpText(
      "after",
      `
Examples:
  msb remove app
  msb remove web api database

Exit codes: 0 removed · 2 another sandbox depends on one of them · 4 no such sandbox or no Sandboxfile.`,
    )
    .action((names: string[], options: { file?: string }, cmd: Command) => {
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
      writeAtomic(file, removeSandboxes(text, file, names));
      if (global.json) printJson(deps.io, { file, removed: names });
      else deps.io.out(`removed ${names.join(", ")} from ${file}\n`);
    });
}
