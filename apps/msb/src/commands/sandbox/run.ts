import { Command, InvalidArgumentError } from "commander";
import { isErrorCode, MsbError } from "@msb/errors";
import { printJson, type CliDeps } from "../../cli/context.js";
import type { ControlPlaneClient } from "@msb/wire";
import { startOrder } from "../../project/order.js";
import {
  connect,
  resolveServerTarget,
  sandboxMetrics,
  SCRIPT_TIMEOUT_S,
} from "../../project/remote.js";
import { runCommandLive } from "../../project/stream-run.js";
import { runInteractive } from "../../terminal/interactive.js";
import { NAME_PATTERN, type ProjectSandbox } from "../../project/sandboxfile.js";
import { readState } from "../../project/state.js";
import { CommandExit } from "../exit.js";
import { launchScript, startInOrder, type LifecycleContext } from "../project/lifecycle.js";
import {
  onInterrupt,
  projectContext,
  sandboxOf,
  withFileOption,
  withNamespaceOption,
  type ProjectContext,
} from "../project/shared.js";

/** `NAME` or `NAME~SCRIPT`; the script defaults to `start`. */
export function parseTarget(value: string): { name: string; script: string } {
  const [name = "", script = "start", ...rest] = value.split("~");
  if (!NAME_PATTERN.test(name) || !NAME_PATTERN.test(script) || rest.length > 0) {
    throw new InvalidArgumentError("expected NAME or NAME~SCRIPT, e.g. app or app~test.");
  }
  return { name, script };
}

/**
 * Starts `name` if it is not running (with its dependencies, as `up`), recording it in the
 * project state.
 */
export async function ensureStarted(
  ctx: ProjectContext,
  sb: ProjectSandbox,
  deps: CliDeps,
  client: ControlPlaneClient,
): Promise<void> {
  const running = new Set(
    (await sandboxMetrics(client, ctx.namespace)).filter((m) => m.running).map((m) => m.name),
  );
  if (running.has(sb.name)) return;
  const lc: LifecycleContext = {
    client,
    project: ctx.project,
    namespace: ctx.namespace,
    state: readState(ctx.project.dir),
    deps,
    quiet: true,
  };
  const outcome = await startInOrder(lc, startOrder(ctx.project.sandboxes, [sb.name]), running);
  const failed = outcome.failed[0];
  if (failed !== undefined) {
    throw new MsbError(isErrorCode(failed.code) ? failed.code : "INTERNAL", failed.message);
  }
  if (!outcome.started.includes(sb.name)) {
    throw new MsbError(
      "SANDBOX_STOPPED",
      `${sb.name} was not started: ${outcome.skipped[0]?.because ?? "see above"}.`,
    );
  }
}

export function runCommandCommand(deps: CliDeps): Command {
  return withNamespaceOption(
    withFileOption(
      new Command("run")
        .description(
          "run a script of a sandbox (default `start`), or a command, printing its output live",
        )
        .argument("<target>", "NAME or NAME~SCRIPT", parseTarget),
    ),
  )
    .option(
      "-d, --detach",
      "run it in the background in the guest (output: `msb log NAME --script SCRIPT`)",
    )
    .option("--exec <command>", "run this shell command instead of a script")
    .addHelpText(
      "after",
      `
The sandbox is started first if it is not running (with what it depends on). The script runs
as \`SHELL -c SCRIPT\` (SHELL from the file, default /bin/sh) through sandbox.command.run, for
at most ${SCRIPT_TIMEOUT_S} s; its output is printed as it is produced (stdout to stdout, stderr
to stderr). Ctrl-C stops the script in the guest; the sandbox keeps running. With --exec and
stdin on a terminal, CMD gets a pseudo-terminal instead (as \`msb shell --command\`), so
\`--exec bash\` is interactive.

Examples:
  msb run app              # the start script
  msb run app~test         # the test script
  msb run app --detach     # start script in the background
  msb run app --exec "ls -la /"

Exit codes: the command's own exit code · 2 bad target or unknown script · 4 not in the file ·
8 timed out · 10 server not running.`,
    )
    .action(
      async (
        target: { name: string; script: string },
        options: { file?: string; namespace: string; detach?: boolean; exec?: string },
        cmd: Command,
      ) => {
        const ctx = projectContext(cmd, options, deps);
        const sb = sandboxOf(ctx.project, target.name);
        const script = options.exec ?? sb.scripts[target.script];
        if (script === undefined) {
          throw new MsbError(
            "INVALID_PARAMS",
            `${sb.name} has no script "${target.script}" in ${ctx.project.file} (scripts: ${Object.keys(sb.scripts).join(", ") || "none"}). Add one with --script in \`msb add\`, or run a command with --exec.`,
            { details: { sandbox: sb.name, script: target.script } },
          );
        }
        const scriptName = options.exec === undefined ? target.script : "exec";
        const client = await connect(ctx.global, deps, (SCRIPT_TIMEOUT_S + 60) * 1000);
        await ensureStarted(ctx, sb, deps, client);
        if (options.detach === true) {
          await launchScript(client, ctx.namespace, sb, scriptName, script);
          if (ctx.global.json)
            printJson(deps.io, { sandbox: sb.name, script: scriptName, detached: true });
          else
            deps.io.out(
              `${sb.name}: ${scriptName} running in the background; see \`msb log ${sb.name} --script ${scriptName}\`\n`,
            );
          return;
        }
        if (options.exec !== undefined && process.stdin.isTTY === true && !ctx.global.json) {
          // `--exec bash` from a terminal: an interactive program needs a pty, as `msb shell`.
          const code = await runInteractive({
            target: await resolveServerTarget(ctx.global, deps),
            sandbox: sb.name,
            namespace: ctx.namespace,
            shell: sb.shell,
            command: options.exec,
            terminal: { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
          });
          if (code !== 0) throw new CommandExit(code);
          return;
        }
        const interrupt = onInterrupt();
        try {
          const result = await runCommandLive(
            await resolveServerTarget(ctx.global, deps),
            deps,
            {
              namespace: ctx.namespace,
              sandbox: sb.name,
              command: sb.shell,
              args: ["-c", script],
              timeoutS: SCRIPT_TIMEOUT_S,
            },
            { quiet: ctx.global.json, signal: interrupt.signal },
          );
          if (ctx.global.json) printJson(deps.io, result);
          const code = result.exit_code ?? 1;
          if (code !== 0) throw new CommandExit(code);
        } finally {
          interrupt.dispose();
        }
      },
    );
}
