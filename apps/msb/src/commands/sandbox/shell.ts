import { Command } from "commander";
import type { CliDeps } from "../../cli/context.js";
import { connect, resolveServerTarget, SCRIPT_TIMEOUT_S } from "../../project/remote.js";
import { runInteractive } from "../../terminal/interactive.js";
import {
  projectContext,
  sandboxOf,
  withFileOption,
  withNamespaceOption,
} from "../project/shared.js";
import { CommandExit } from "../exit.js";
import { ensureStarted } from "./run.js";

export function shellCommand(deps: CliDeps): Command {
  return withNamespaceOption(
    withFileOption(
      new Command("shell")
        .description("open a shell in a sandbox (a real terminal when stdin is one)")
        .argument("<name>", "sandbox name"),
    ),
  )
    .option("-c, --command <command>", "run this shell command instead of an interactive shell")
    .addHelpText(
      "after",
      `
Starts the sandbox if it is not running, then attaches to SHELL (from the file, default
/bin/sh) over the server's WebSocket route. When stdin is a terminal: raw mode and a real
pseudo-terminal in the guest of your window's size (resizes follow); Ctrl-C, Ctrl-D and
Ctrl-Z go to the guest. Otherwise pipes: stdin is the shell's input, its end ends the
shell, stdout and stderr stay apart, and Ctrl-C sends SIGINT to the guest (twice: detach).

Examples:
  msb shell app
  msb shell app --command 'top'
  echo 'uname -a' | msb shell app

Exit codes: the shell's own exit code · 4 not in the file · 10 server not running · 130
ended by SIGTERM/SIGHUP.`,
    )
    .action(
      async (
        name: string,
        options: { file?: string; namespace: string; command?: string },
        cmd: Command,
      ) => {
        const ctx = projectContext(cmd, options, deps);
        const sb = sandboxOf(ctx.project, name);
        const client = await connect(ctx.global, deps, (SCRIPT_TIMEOUT_S + 60) * 1000);
        await ensureStarted(ctx, sb, deps, client);
        const code = await runInteractive({
          target: await resolveServerTarget(ctx.global, deps),
          sandbox: sb.name,
          namespace: ctx.namespace,
          shell: sb.shell,
          ...(options.command === undefined ? {} : { command: options.command }),
          terminal: { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
        });
        if (code !== 0) throw new CommandExit(code);
      },
    );
}
