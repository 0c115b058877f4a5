import { createInterface } from "node:readline";
import type { Readable } from "node:stream";
import { Command } from "commander";
import { toMsbError } from "@msb/errors";
import type { CliDeps } from "../../cli/context.js";
import type { ControlPlaneClient } from "../../client/control-plane.js";
import { connect, runCommand, SCRIPT_TIMEOUT_S } from "../../project/remote.js";
import {
  printOutput,
  projectContext,
  sandboxOf,
  withFileOption,
  withNamespaceOption,
} from "../project/shared.js";
import { CommandExit } from "../exit.js";
import { ensureStarted } from "./run.js";

/**
 * The line-mode shell: each line of `input` runs as `SHELL -c LINE` in the guest through
 * sandbox.command.run and its output is printed when it ends. A PTY needs a streaming route the
 * API does not have yet. Every line is its own process, so `cd` and variables do not carry
 * over (`cd /app && ls` does). Ends at end of input (Ctrl-D); resolves to the last exit code.
 */
export async function lineShell(
  client: ControlPlaneClient,
  namespace: string,
  sandbox: string,
  shell: string,
  input: Readable,
  deps: CliDeps,
  prompt: boolean,
): Promise<number> {
  const rl = createInterface({ input, terminal: false });
  let last = 0;
  if (prompt) deps.io.err(`${sandbox}$ `);
  for await (const line of rl) {
    if (line.trim() !== "") {
      try {
        const result = await runCommand(
          client,
          namespace,
          sandbox,
          shell,
          ["-c", line],
          SCRIPT_TIMEOUT_S,
        );
        printOutput(deps, result.output);
        last = result.exit_code ?? 1;
      } catch (err) {
        const e = toMsbError(err);
        deps.io.err(`msb: ${e.message}\n`);
        last = 1;
        // The sandbox is gone: nothing further can run.
        if (
          ["SANDBOX_NOT_FOUND", "SANDBOX_STOPPED", "VM_DIED", "SERVER_NOT_RUNNING"].includes(e.code)
        ) {
          throw e;
        }
      }
    }
    if (prompt) deps.io.err(`${sandbox}$ `);
  }
  if (prompt) deps.io.err("\n");
  return last;
}

export function shellCommand(deps: CliDeps): Command {
  return withNamespaceOption(
    withFileOption(
      new Command("shell")
        .description(
          "run shell commands in a sandbox, one line at a time (line-mode fallback, no PTY)",
        )
        .argument("<name>", "sandbox name"),
    ),
  )
    .addHelpText(
      "after",
      `
Starts the sandbox if it is not running. Each line you type runs as \`SHELL -c LINE\` in the
guest and its output is printed when it finishes; interactive programs (vim, python without
-c) do not work, and \`cd\` does not carry over to the next line. Ctrl-D exits. Also reads
commands from a pipe: \`echo 'uname -a' | msb shell app\`.

Examples:
  msb shell app

Exit codes: the exit code of the last command · 4 not in the file · 10 server not running.`,
    )
    .action(async (name: string, options: { file?: string; namespace: string }, cmd: Command) => {
      const ctx = projectContext(cmd, options, deps);
      const sb = sandboxOf(ctx.project, name);
      const client = await connect(ctx.global, deps, (SCRIPT_TIMEOUT_S + 60) * 1000);
      await ensureStarted(ctx, sb, deps, client);
      const code = await lineShell(
        client,
        ctx.namespace,
        sb.name,
        sb.shell,
        process.stdin,
        deps,
        process.stdin.isTTY,
      );
      if (code !== 0) throw new CommandExit(code);
    });
}
