import { Command } from "commander";
import { exitCodeOf, toMsbError } from "@msb/errors";
import { printJson, type CliDeps } from "../../cli/context.js";
import { CommandExit } from "../exit.js";
import { imageContext, withNextStep } from "./shared.js";

export function rmiCommand(deps: CliDeps): Command {
  return new Command("rmi")
    .description("remove images from the server's image store")
    .argument("<reference...>", "images to remove, as `msb images` shows them")
    .addHelpText(
      "after",
      `
Removes each image's tag; layers no other image uses are deleted. Sandboxes already running
keep their root filesystem. Every reference is tried; the exit code is that of the first
failure.

Examples:
  msb rmi 127.0.0.1:5000/team/app:1
  msb rmi microsandbox/python team/tool:2

Exit codes: 0 · 3 key not allowed · 6 image not in the store · 10 server unreachable.`,
    )
    .action(async (references: string[], _options: unknown, cmd: Command) => {
      const ctx = await imageContext(cmd, deps);
      const removed: { reference: string; removed_digests: unknown }[] = [];
      const failed: { reference: string; code: string; message: string }[] = [];
      let exitCode = 0;
      for (const reference of references) {
        try {
          const r = (await ctx.client.call("image.remove", { reference })) as {
            removed_digests?: unknown;
          };
          removed.push({ reference, removed_digests: r.removed_digests ?? [] });
          if (!ctx.global.json) deps.io.out(`removed ${reference}\n`);
        } catch (thrown) {
          const err = toMsbError(withNextStep(thrown));
          // Nothing after this would reach the server either.
          if (err.code === "SERVER_NOT_RUNNING" && removed.length === 0 && failed.length === 0)
            throw err;
          failed.push({ reference, code: err.code, message: err.message });
          if (exitCode === 0) exitCode = exitCodeOf(err);
          if (!ctx.global.json) deps.io.err(`msb: ${err.message}\n`);
        }
      }
      if (ctx.global.json) {
        printJson(deps.io, { removed });
        if (failed.length > 0) deps.io.err(`${JSON.stringify({ errors: failed })}\n`);
      }
      if (exitCode !== 0) throw new CommandExit(exitCode);
    });
}
