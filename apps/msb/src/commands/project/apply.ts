import { Command } from "commander";
import type { CliDeps } from "../../cli/context.js";
import { planApply, type ApplyAction } from "../../project/plan.js";
import { connect, sandboxMetrics } from "../../project/remote.js";
import { readState } from "../../project/state.js";
import { startInOrder, stopInOrder, type LifecycleContext } from "./lifecycle.js";
import { projectContext, withFileOption, withNamespaceOption } from "./shared.js";
import { finishUp } from "./up.js";

export function describeAction(action: ApplyAction): string {
  switch (action.kind) {
    case "keep":
      return `${action.name}: unchanged, running`;
    case "stop":
      return `${action.name}: stop (${action.reason === "removed" ? "no longer in the Sandboxfile" : "configuration changed"})`;
    case "start":
      return `${action.name}: start (${action.reason})`;
  }
}

export function applyCommand(deps: CliDeps): Command {
  return withNamespaceOption(
    withFileOption(
      new Command("apply").description(
        "make the running sandboxes match the Sandboxfile: start new ones, restart changed ones, stop removed ones",
      ),
    ),
  )
    .option("-d, --detach", "converge, launch the start scripts in the background, and return")
    .option("--dry-run", "print the plan and change nothing")
    .addHelpText(
      "after",
      `
What this project started is recorded in .msb/state.json next to the Sandboxfile (with the
configuration each sandbox was started with); apply compares the file with it: a sandbox no
longer in the file is stopped, one whose configuration differs is stopped and started again,
a new or stopped one is started. Without --detach it then stays in the foreground like \`msb up\`.

Examples:
  msb apply --dry-run
  msb apply --detach

Exit codes: 0 converged · that of the first failure otherwise · 130 stopped with Ctrl-C.`,
    )
    .action(
      async (
        options: { file?: string; namespace: string; detach?: boolean; dryRun?: boolean },
        cmd: Command,
      ) => {
        const { global, project, namespace } = projectContext(cmd, options, deps);
        const client = await connect(global, deps);
        const running = new Set(
          (await sandboxMetrics(client, namespace)).filter((m) => m.running).map((m) => m.name),
        );
        const state = readState(project.dir);
        const plan = planApply(project, state.entries, namespace, running);
        if (options.dryRun === true) {
          if (global.json) deps.io.out(`${JSON.stringify({ namespace, plan }, null, 2)}\n`);
          else deps.io.out(`${plan.map(describeAction).join("\n")}\n`);
          return;
        }
        const ctx: LifecycleContext = {
          client,
          project,
          namespace,
          state,
          deps,
          quiet: global.json,
        };
        if (!global.json) {
          for (const a of plan.filter((p) => p.kind !== "keep"))
            deps.io.out(`${describeAction(a)}\n`);
        }
        const stops = plan.filter((a) => a.kind === "stop").map((a) => a.name);
        const stopped = await stopInOrder(ctx, stops);
        const starts = plan.filter((a) => a.kind === "start").map((a) => a.name);
        const outcome = await startInOrder(ctx, starts, running);
        await finishUp(ctx, outcome, options.detach === true, global.json, {
          plan,
          stopped: stopped.stopped,
        });
      },
    );
}
