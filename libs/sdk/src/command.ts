import type { OutputHandlers, SandboxChannel } from "./channel.js";
import { CommandExecution } from "./execution.js";

export interface CommandRunOptions extends OutputHandlers {
  /** Seconds; the server kills the process when it expires. */
  readonly timeout?: number | undefined;
  readonly signal?: AbortSignal | undefined;
}

/** Runs processes in one sandbox (`sb.command`). */
export class Command {
  readonly #sandbox: SandboxChannel;

  constructor(sandbox: SandboxChannel) {
    this.#sandbox = sandbox;
  }

  /**
   * Runs `command` with `args` (no shell: use `run("sh", ["-c", "…"])` for one). A non-zero exit
   * is a result (`exitCode`, `success`), not an exception. The third argument is the timeout in
   * seconds, as in the original SDK, or an options object.
   */
  async run(
    command: string,
    args: readonly string[] = [],
    timeoutOrOptions?: number | CommandRunOptions,
  ): Promise<CommandExecution> {
    const options: CommandRunOptions =
      typeof timeoutOrOptions === "number"
        ? { timeout: timeoutOrOptions }
        : (timeoutOrOptions ?? {});
    const sb = this.#sandbox;
    sb.requireStarted();
    const params: Record<string, unknown> = {
      sandbox: sb.name,
      namespace: sb.namespace,
      command,
      args: args.map(String),
    };
    if (options.timeout !== undefined) params["timeout"] = options.timeout;
    const result = await sb.callWithOutput(
      "sandbox.command.run",
      params,
      options.timeout,
      options,
      options.signal,
    );
    return new CommandExecution(result);
  }
}
