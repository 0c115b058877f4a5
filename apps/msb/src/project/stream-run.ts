import type { CliDeps } from "../cli/context.js";
import { streamRpc } from "@msb/wire";
import { printOutput } from "../commands/project/shared.js";
import { parseCommandResult, type CommandResult, type ServerTarget } from "./remote.js";

/**
 * `sandbox.command.run` with its output printed live (docs/streaming.md): stdout chunks to
 * stdout and stderr chunks to stderr as the guest produces them. A server that does not
 * stream answers plain JSON; its output is then printed when the command ends. With
 * `quiet` (`--json`) nothing is printed and the caller prints the result.
 */
export async function runCommandLive(
  target: ServerTarget,
  deps: CliDeps,
  call: {
    readonly namespace: string;
    readonly sandbox: string;
    readonly command: string;
    readonly args: readonly string[];
    readonly timeoutS: number;
  },
  options: { readonly quiet: boolean; readonly signal?: AbortSignal },
): Promise<CommandResult> {
  const { result, streamed } = await streamRpc(
    target,
    "sandbox.command.run",
    {
      sandbox: call.sandbox,
      namespace: call.namespace,
      command: call.command,
      args: call.args,
      timeout: call.timeoutS,
    },
    (o) => {
      if (options.quiet) return;
      if (o.stream === "stderr") deps.io.err(o.text);
      else deps.io.out(o.text);
    },
    {
      // The server enforces the run's timeout; this only catches a server that went silent.
      timeoutMs: (call.timeoutS + 60) * 1000,
      ...(options.signal === undefined ? {} : { signal: options.signal }),
    },
  );
  const parsed = parseCommandResult(result);
  if (!streamed && !options.quiet) printOutput(deps, parsed.output);
  return parsed;
}
