import { Command } from "commander";
import { MsbError, exitCodeOf, isErrorCode } from "@msb/errors";
import { printJson, type CliDeps } from "../../cli/context.js";
import { startOrder, stopOrder } from "../../project/order.js";
import { connect, sandboxMetrics } from "../../project/remote.js";
import { readState } from "../../project/state.js";
import { CommandExit } from "../exit.js";
import {
  followLogs,
  launchStartScripts,
  startInOrder,
  stopInOrder,
  type LifecycleContext,
  type StartOutcome,
} from "./lifecycle.js";
import {
  checkNames,
  onInterrupt,
  projectContext,
  withFileOption,
  withNamespaceOption,
} from "./shared.js";

/** The exit code of a start with failures: that of the first failure (docs/errors.md). */
export function exitCodeOfOutcome(outcome: StartOutcome): number {
  const first = outcome.failed[0];
  if (first === undefined) return 0;
  return isErrorCode(first.code) ? exitCodeOf(new MsbError(first.code, first.message)) : 1;
}

/**
 * After the starts of `up`/`apply`: with `--detach`, launch the start scripts and return;
 * otherwise launch them, follow their logs, and on Ctrl-C stop what this command started.
 */
export async function finishUp(
  ctx: LifecycleContext,
  outcome: StartOutcome,
  detach: boolean,
  json: boolean,
  extra: Record<string, unknown> = {},
): Promise<void> {
  const launched = await launchStartScripts(ctx, outcome.started);
  if (json)
    printJson(ctx.deps.io, { namespace: ctx.namespace, ...extra, ...outcome, scripts: launched });
  const code = exitCodeOfOutcome(outcome);
  if (detach || outcome.started.length === 0) {
    if (code !== 0) throw new CommandExit(code);
    return;
  }
  ctx.deps.io.err(
    `msb: following the start scripts' logs; Ctrl-C stops ${outcome.started.join(", ")}.\n`,
  );
  const interrupt = onInterrupt();
  try {
    await followLogs(ctx.client, ctx.namespace, launched, "start", ctx.deps, interrupt.signal, {
      json,
    });
  } finally {
    interrupt.dispose();
  }
  await stopInOrder(ctx, stopOrder(ctx.project.sandboxes, outcome.started));
  throw new CommandExit(130);
}

export function upCommand(deps: CliDeps): Command {
  return withNamespaceOption(
    withFileOption(
      new Command("up")
        .description("start the project's sandboxes (and what they depend on) in dependency order")
        .argument("[names...]", "only these sandboxes and their dependencies (default: all)"),
    ),
  )
    .option("-d, --detach", "start, launch the start scripts in the background, and return")
    .addHelpText(
      "after",
      `
Without --detach, up stays in the foreground: it runs each sandbox's \`start\` script in the
guest, prints the scripts' output (polled once a second, prefixed with the sandbox name), and
Ctrl-C stops the sandboxes it started. A sandbox that fails to start is reported and the ones
that depend on it are skipped; independent ones still start.

Examples:
  msb up                 # all, foreground
  msb up app database    # these two and their dependencies
  msb up --detach        # start and return; logs with \`msb log NAME\`

Exit codes: 0 all started · that of the first failure otherwise (6 image, 7 VM, 10 server not
running, …) · 130 stopped with Ctrl-C.`,
    )
    .action(
      async (
        names: string[],
        options: { file?: string; namespace: string; detach?: boolean },
        cmd: Command,
      ) => {
        const { global, project, namespace } = projectContext(cmd, options, deps);
        checkNames(project, names);
        const client = await connect(global, deps);
        const running = new Set(
          (await sandboxMetrics(client, namespace)).filter((m) => m.running).map((m) => m.name),
        );
        const ctx: LifecycleContext = {
          client,
          project,
          namespace,
          state: readState(project.dir),
          deps,
          quiet: global.json,
        };
        const outcome = await startInOrder(ctx, startOrder(project.sandboxes, names), running);
        await finishUp(ctx, outcome, options.detach === true, global.json);
      },
    );
}
