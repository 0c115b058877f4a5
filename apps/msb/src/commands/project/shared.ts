import { InvalidArgumentError, Option, type Command } from "commander";
import { MsbError } from "@msb/errors";
import type { CliDeps, GlobalOptions } from "../../cli/context.js";
import { globalOptions } from "../../cli/globals.js";
import type { ControlPlaneClient } from "@msb/wire";
import {
  loadProject,
  NAME_PATTERN,
  sandboxfilePath,
  type Project,
  type ProjectSandbox,
} from "../../project/sandboxfile.js";

/** `--file` and `--namespace`, shared by the project commands. */
export interface ProjectOptions {
  readonly file?: string;
  readonly namespace: string;
}

export function withFileOption(cmd: Command): Command {
  return cmd.option(
    "--file <path>",
    "the Sandboxfile, or a directory holding one (default: ./Sandboxfile)",
  );
}

export function withNamespaceOption(cmd: Command): Command {
  return cmd.addOption(
    new Option("--namespace <name>", "namespace of the project's sandboxes")
      .default("default")
      .argParser(parseName),
  );
}

export function parseName(value: string): string {
  if (!NAME_PATTERN.test(value)) {
    throw new InvalidArgumentError("expected a name matching ^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$.");
  }
  return value;
}

/** A repeatable flag (`--port 1:2 --port 3:4`), checked by `pattern`. */
export function collect(pattern: RegExp, what: string) {
  return (value: string, previous: string[] = []): string[] => {
    if (!pattern.test(value)) throw new InvalidArgumentError(`expected ${what}.`);
    return [...previous, value];
  };
}

export const PORT_PATTERN = /^\d{1,5}:\d{1,5}(\/(tcp|udp))?$/;
export const VOLUME_PATTERN = /^[^:]+:\/[^:]*(:ro)?$/;
export const ENV_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*=/;
export const SCRIPT_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}=/;

/** `--memory`, `--cpus`: a whole number, 1 or more. */
export function parsePositive(value: string): number {
  if (!/^\d+$/.test(value) || Number(value) < 1) {
    throw new InvalidArgumentError("expected a whole number, 1 or more.");
  }
  return Number(value);
}

/** Everything a project command needs: flags, the parsed file, the namespace. */
export interface ProjectContext {
  readonly global: GlobalOptions;
  readonly project: Project;
  readonly namespace: string;
}

export function projectContext(
  cmd: Command,
  options: { file?: string; namespace?: string },
  deps: CliDeps,
): ProjectContext {
  const global = globalOptions(cmd, deps.env);
  const project = loadProject(sandboxfilePath(options.file, process.cwd()));
  return { global, project, namespace: options.namespace ?? "default" };
}

export function sandboxOf(project: Project, name: string): ProjectSandbox {
  const sb = project.sandboxes.find((s) => s.name === name);
  if (sb === undefined) {
    throw new MsbError(
      "SANDBOX_NOT_FOUND",
      `no sandbox "${name}" in ${project.file} (known: ${project.sandboxes.map((s) => s.name).join(", ") || "none"}). Add it with \`msb add ${name} --image IMAGE\`.`,
      { details: { file: project.file, sandbox: name } },
    );
  }
  return sb;
}

export function checkNames(project: Project, names: readonly string[]): void {
  for (const name of names) sandboxOf(project, name);
}

/**
 * Resolves on the first SIGINT/SIGTERM (and aborts `signal`); `dispose` removes the handlers.
 * While installed, Ctrl-C does not kill the CLI, so it can clean up (stop sandboxes) first.
 */
export function onInterrupt(): {
  readonly signal: AbortSignal;
  readonly interrupted: Promise<NodeJS.Signals>;
  dispose(): void;
} {
  const controller = new AbortController();
  let resolve: (s: NodeJS.Signals) => void = () => undefined;
  const interrupted = new Promise<NodeJS.Signals>((r) => (resolve = r));
  const handler = (sig: NodeJS.Signals) => {
    controller.abort(new MsbError("CANCELLED", `interrupted by ${sig}.`));
    resolve(sig);
  };
  process.once("SIGINT", handler);
  process.once("SIGTERM", handler);
  return {
    signal: controller.signal,
    interrupted,
    dispose() {
      process.off("SIGINT", handler);
      process.off("SIGTERM", handler);
    },
  };
}

/** Prints a command's output: stdout lines to stdout, stderr lines to stderr. */
export function printOutput(
  deps: CliDeps,
  output: readonly { stream: string; text: string }[],
  prefix = "",
): void {
  for (const o of output) {
    if (o.stream === "stderr") deps.io.err(`${prefix}${o.text}\n`);
    else deps.io.out(`${prefix}${o.text}\n`);
  }
}

export type { ControlPlaneClient };
