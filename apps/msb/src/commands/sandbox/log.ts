import { Command } from "commander";
import { MsbError } from "@msb/errors";
import type { CliDeps } from "../../cli/context.js";
import { parseCount } from "../../cli/parse.js";
import {
  connect,
  guestLogPath,
  logPollCommand,
  parseLogPoll,
  runCommand,
} from "../../project/remote.js";
import { followLogs, POLL_INTERVAL_MS } from "../project/lifecycle.js";
import {
  onInterrupt,
  parseName,
  projectContext,
  sandboxOf,
  withFileOption,
  withNamespaceOption,
} from "../project/shared.js";

export function logCommand(deps: CliDeps): Command {
  return withNamespaceOption(
    withFileOption(
      new Command("log")
        .description(
          "show the output of a sandbox's start script (run by `up --detach` / `run --detach`)",
        )
        .argument("<name>", "sandbox name"),
    ),
  )
    .option("-f, --follow", "keep printing new lines until Ctrl-C")
    .option("-n, --tail <lines>", "how many of the last lines to show", parseCount, 50)
    .option("--script <name>", "log of another detached script", parseName, "start")
    .addHelpText(
      "after",
      `
Detached scripts write to /var/log/msb-<script>.log in the guest; this reads it with
sandbox.command.run and prints the last N lines. --follow polls every ${POLL_INTERVAL_MS / 1000} s and prints
complete lines only (the API has no log stream yet).

Examples:
  msb log app
  msb log app --follow
  msb log app --tail 50

Exit codes: 0 · 4 no such sandbox, or the script has not run yet · 10 server not running.`,
    )
    .action(
      async (
        name: string,
        options: {
          file?: string;
          namespace: string;
          follow?: boolean;
          tail: number;
          script: string;
        },
        cmd: Command,
      ) => {
        const ctx = projectContext(cmd, options, deps);
        sandboxOf(ctx.project, name);
        const client = await connect(ctx.global, deps, 60_000);
        const log = guestLogPath(options.script);
        const { command, args } = logPollCommand(options.script, 0);
        const first = parseLogPoll(
          await runCommand(client, ctx.namespace, name, command, args, 30),
        );
        if (first.count === 0 && first.lines.length === 0 && first.exitCode === undefined) {
          const probe = await runCommand(
            client,
            ctx.namespace,
            name,
            "/bin/sh",
            ["-c", `test -e ${log}`],
            30,
          );
          if (probe.exit_code !== 0) {
            throw new MsbError(
              "FILE_NOT_FOUND",
              `${name} has no ${log} yet: the ${options.script} script has not been started in the background. Start it with \`msb up --detach\` or \`msb run ${name}~${options.script} --detach\`.`,
              { details: { sandbox: name, path: log } },
            );
          }
        }
        const shown = options.tail === 0 ? [] : first.lines.slice(-options.tail);
        for (const line of shown) {
          deps.io.out(
            ctx.global.json ? `${JSON.stringify({ sandbox: name, line })}\n` : `${line}\n`,
          );
        }
        if (options.follow !== true) return;
        const interrupt = onInterrupt();
        try {
          await followLogs(client, ctx.namespace, [name], options.script, deps, interrupt.signal, {
            from: new Map([[name, first.count]]),
            json: ctx.global.json,
          });
        } finally {
          interrupt.dispose();
        }
      },
    );
}
