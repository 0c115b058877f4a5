import { Command } from "commander";
import { printJson, type CliDeps } from "../../cli/context.js";
import { stopOrder } from "../../project/order.js";
import { connect } from "../../project/remote.js";
import { readState } from "../../project/state.js";
import { CommandExit } from "../exit.js";
import { stopInOrder } from "./lifecycle.js";
import { projectContext, withFileOption, withNamespaceOption } from "./shared.js";
import { exitCodeOfOutcome } from "./up.js";

export function downCommand(deps: CliDeps): Command {
  return withNamespaceOption(
    withFileOption(
      new Command("down")
        .description("stop the project's sandboxes, dependents first")
        .argument(
          "[names...]",
          "only these sandboxes (default: all, and any the project started that the file no longer has)",
        ),
    ),
  )
    .addHelpText(
      "after",
      `
Examples:
  msb down
  msb down app database

A sandbox the server does not know is reported and skipped (exit 0). Exit codes: 0 · that of
the first failure otherwise (10 server not running, …).`,
    )
    .action(
      async (names: string[], options: { file?: string; namespace: string }, cmd: Command) => {
        const { global, project, namespace } = projectContext(cmd, options, deps);
        const state = readState(project.dir);
        const orphans = state.entries
          .filter(
            (e) => e.namespace === namespace && !project.sandboxes.some((s) => s.name === e.name),
          )
          .map((e) => e.name);
        const wanted =
          names.length > 0 ? names : [...orphans, ...project.sandboxes.map((s) => s.name)];
        const client = await connect(global, deps);
        const result = await stopInOrder(
          { client, project, namespace, state, deps, quiet: global.json },
          stopOrder(project.sandboxes, wanted),
        );
        if (global.json) printJson(deps.io, { namespace, ...result });
        const code = exitCodeOfOutcome({ started: [], skipped: [], failed: result.failed });
        if (code !== 0) throw new CommandExit(code);
      },
    );
}
