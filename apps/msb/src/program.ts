import { Command, CommanderError } from "commander";
import type { CliDeps } from "./cli/context.js";
import { renderError } from "./cli/errors.js";
import { CommandExit } from "./commands/exit.js";
import { imageCommands } from "./commands/image/index.js";
import { projectCommands } from "./commands/project/index.js";
import { serverCommand } from "./commands/server/index.js";

/** Exit code of a usage error (bad flag, missing argument): "bad input" in docs/errors.md. */
export const USAGE_EXIT_CODE = 2;

/** The `msb` command tree. Global flags are accepted before or after the verb. */
export function createProgram(deps: CliDeps): Command {
  const program = new Command("msb")
    .description("run untrusted code in microVMs: server, sandboxes, images")
    .version("0.1.0", "-V, --version")
    .option(
      "--json",
      "machine-readable output (one JSON document on stdout; errors as JSON on stderr)",
    )
    .option("--debug", "show stack traces and causes of errors")
    .option("--home <dir>", "MSB_HOME (default: $MSB_HOME or ~/.msb)")
    .showHelpAfterError("(run with --help for usage)")
    .configureOutput({
      writeOut: (text) => deps.io.out(text),
      writeErr: (text) => deps.io.err(text),
    })
    .exitOverride();
  program.addCommand(serverCommand(deps));
  for (const cmd of projectCommands(deps)) program.addCommand(cmd);
  for (const cmd of imageCommands(deps)) program.addCommand(cmd);
  // Settings are not inherited by commands added with addCommand: apply them to the tree.
  const apply = (cmd: Command) => {
    cmd
      .exitOverride()
      .configureOutput(program.configureOutput())
      .showHelpAfterError("(run with --help for usage)");
    cmd.commands.forEach(apply);
  };
  program.commands.forEach(apply);
  return program;
}

/** Runs the CLI on `argv` (without node and script); resolves to the process exit code. */
export async function runCli(argv: readonly string[], deps: CliDeps): Promise<number> {
  const program = createProgram(deps);
  try {
    await program.parseAsync([...argv], { from: "user" });
    return 0;
  } catch (err) {
    // A command that ran something and passes its exit code on (`msb run`, `msb exe`).
    if (err instanceof CommandExit) return err.code;
    if (err instanceof CommanderError) {
      // Commander already printed the message (or the help / version).
      return err.exitCode === 0 ? 0 : USAGE_EXIT_CODE;
    }
    const flags = program.opts<{ json?: boolean; debug?: boolean }>();
    const rendered = renderError(err, { json: flags.json === true, debug: flags.debug === true });
    deps.io.err(rendered.text);
    return rendered.exitCode;
  }
}
