import { randomBytes } from "node:crypto";
import { isAbsolute, resolve } from "node:path";
import { Command } from "commander";
import { MsbError, toMsbError } from "@msb/errors";
import { printJson, type CliDeps } from "../../cli/context.js";
import type { ControlPlaneClient } from "@msb/wire";
import { globalOptions } from "../../cli/globals.js";
import {
  connect,
  resolveServerTarget,
  SCRIPT_TIMEOUT_S,
  startSandbox,
  stopSandbox,
} from "../../project/remote.js";
import { runCommandLive } from "../../project/stream-run.js";
import { runInteractive } from "../../terminal/interactive.js";
import { DEFAULT_SHELL, type StartConfig } from "../../project/sandboxfile.js";
import { CommandExit } from "../exit.js";
import {
  collect,
  onInterrupt,
  parsePositive,
  VOLUME_PATTERN,
  withNamespaceOption,
} from "../project/shared.js";

export interface ExeOptions {
  readonly memory?: number;
  readonly cpus?: number;
  readonly volume?: string[];
  readonly namespace: string;
}

/** A fresh name for a temporary sandbox: `exe-` + 8 hex digits. */
export function temporaryName(): string {
  return `exe-${randomBytes(4).toString("hex")}`;
}

/** The `sandbox.start` config of `msb exe`; relative volume host paths resolve against `cwd`. */
export function exeConfig(image: string, options: ExeOptions, cwd: string): StartConfig {
  return {
    image,
    ...(options.memory === undefined ? {} : { memory: options.memory }),
    ...(options.cpus === undefined ? {} : { cpus: options.cpus }),
    volumes: (options.volume ?? []).map((v) => {
      const at = v.indexOf(":");
      const host = v.slice(0, at);
      return isAbsolute(host) ? v : `${resolve(cwd, host)}${v.slice(at)}`;
    }),
    ports: [],
    envs: [],
    scripts: {},
  };
}

export function exeCommand(deps: CliDeps): Command {
  return withNamespaceOption(
    new Command("exe")
      .description("run a command in a temporary sandbox, then stop it")
      .argument("<image>", "OCI image, e.g. microsandbox/python or python:3.11")
      .argument(
        "[command...]",
        "command and arguments, after -- (default: a shell, as `msb shell`)",
      ),
  )
    .option("--memory <MiB>", "memory in MiB (server default 512)", parsePositive)
    .option("--cpus <n>", "virtual CPUs (server default 1)", parsePositive)
    .option(
      "-v, --volume <host:guest>",
      "mount a host directory (repeatable; relative to the current directory)",
      collect(VOLUME_PATTERN, "HOST:/GUEST[:ro], e.g. ./code:/workspace"),
    )
    .addHelpText(
      "after",
      `
Starts a sandbox named exe-XXXXXXXX from IMAGE, runs the command (argv as given, no shell),
prints its output as it is produced and exits with its exit code. Without a command it opens
a shell, like \`msb shell\` (a terminal when stdin is one, else pipes). The sandbox is
stopped and deleted (its files too) afterwards, also on Ctrl-C or SIGTERM.

Examples:
  msb exe microsandbox/python -- python3 -c 'print(6*7)'
  msb exe ubuntu:22.04 --memory 256 --cpus 1 --volume ./code:/workspace -- ls /workspace
  echo 'uname -a' | msb exe microsandbox/python

Exit codes: the command's own exit code · 6 image · 7 VM · 8 timed out · 10 server not
running · 130 interrupted.`,
    )
    .action(async (image: string, command: string[], options: ExeOptions, cmd: Command) => {
      const global = globalOptions(cmd, deps.env);
      const name = temporaryName();
      const namespace = options.namespace;
      const client = await connect(global, deps, (SCRIPT_TIMEOUT_S + 60) * 1000);
      const interrupt = onInterrupt();
      let code = 0;
      try {
        if (deps.io.isTty && !global.json) deps.io.err(`msb: starting ${name} (${image})…\n`);
        await startSandbox(
          client,
          namespace,
          name,
          exeConfig(image, options, process.cwd()),
          interrupt.signal,
        );
        const [program, ...args] = command;
        const target = await resolveServerTarget(global, deps);
        if (program === undefined) {
          // The session handles Ctrl-C itself (a byte on a terminal, SIGINT to the guest on pipes).
          interrupt.dispose();
          code = await runInteractive({
            target,
            sandbox: name,
            namespace,
            shell: DEFAULT_SHELL,
            terminal: { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr },
          });
        } else {
          const result = await runCommandLive(
            target,
            deps,
            { namespace, sandbox: name, command: program, args, timeoutS: SCRIPT_TIMEOUT_S },
            { quiet: global.json, signal: interrupt.signal },
          );
          if (global.json) printJson(deps.io, { sandbox: name, ...result });
          code = result.exit_code ?? 1;
        }
      } finally {
        interrupt.dispose();
        // Remove even after a failure or Ctrl-C; a second Ctrl-C during it kills the CLI.
        try {
          await removeTemporary(client, namespace, name);
        } catch (err) {
          deps.io.err(
            `msb: could not remove temporary sandbox ${name}: ${toMsbError(err).message} Remove it with a sandbox.stop call with "remove": true, or \`msb server stop\`.\n`,
          );
        }
      }
      if (interrupt.signal.aborted) throw new CommandExit(130);
      if (code !== 0) throw new CommandExit(code);
    });
}

/** How long `msb exe` waits for an interrupted start to settle before removing the sandbox. */
const BUSY_WAIT_MS = 60_000;
const BUSY_POLL_MS = 500;

/**
 * Stops and deletes the temporary sandbox. A Ctrl-C during the start leaves the server still
 * booting it (SANDBOX_BUSY): the removal is retried until that boot has settled.
 */
async function removeTemporary(
  client: ControlPlaneClient,
  namespace: string,
  name: string,
): Promise<void> {
  const until = Date.now() + BUSY_WAIT_MS;
  for (;;) {
    try {
      await stopSandbox(client, namespace, name, { remove: true });
      return;
    } catch (err) {
      const busy = err instanceof MsbError && err.code === "SANDBOX_BUSY";
      if (!busy || Date.now() >= until) throw err;
      await new Promise((resolve) => setTimeout(resolve, BUSY_POLL_MS));
    }
  }
}
