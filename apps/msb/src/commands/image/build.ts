import { resolve } from "node:path";
import { Command } from "commander";
import { printJson, type CliDeps } from "../../cli/context.js";
import { formatBytes } from "../../cli/table.js";
import { shortDigest } from "./progress.js";
import { imageSummarySchema, parseAnswer, pushResultSchema } from "@msb/wire";
import { imageContext, interruptible, withNextStep } from "./shared.js";

export function buildCommand(deps: CliDeps): Command {
  return new Command("build")
    .description("build an image from a definition directory (images/<name>) into the store")
    .argument("<dir>", "definition directory, e.g. images/python (relative to this directory)")
    .option("--tag <name:tag>", "store it under this name instead of the definition's")
    .option("--no-cache", "rebuild even when a build with the same inputs exists")
    .option("--push <registry-ref>", "then push it there, e.g. 127.0.0.1:5000/microsandbox/python")
    .addHelpText(
      "after",
      `
The server's image service reads the directory, so it must be on the server's host: the path
is sent absolute (resolved against this directory). Builds are cached by their inputs; a
cached build only imports (seconds). Build output goes to stderr.

Examples:
  msb build images/python
  msb build images/node --tag team/node:dev --no-cache
  msb build images/python --push 127.0.0.1:5000/microsandbox/python

Exit codes: 0 · 3 key not allowed · 6 invalid definition, build or push failed, registry
unreachable · 10 server not running.`,
    )
    .action(
      async (
        dir: string,
        options: { tag?: string; cache: boolean; push?: string },
        cmd: Command,
      ) => {
        const ctx = await imageContext(cmd, deps);
        const result = await interruptible(async (signal) => {
          const raw = await ctx.client.stream(
            "image.build",
            {
              definition_dir: resolve(process.cwd(), dir),
              ...(options.tag === undefined ? {} : { tag: options.tag }),
              ...(options.cache ? {} : { no_cache: true }),
            },
            ctx.progress,
            signal,
          );
          const image = parseAnswer(imageSummarySchema, "image.build", raw);
          if (!ctx.global.json) {
            deps.io.out(
              `built ${image.reference} (${shortDigest(image.digest)}, ${formatBytes(image.size_bytes)})\n`,
            );
          }
          if (options.push === undefined) return { image };
          const pushed = parseAnswer(
            pushResultSchema,
            "image.push",
            await ctx.client.stream(
              "image.push",
              { reference: image.reference, target: options.push },
              ctx.progress,
              signal,
            ),
          );
          if (!ctx.global.json) {
            deps.io.out(`pushed ${pushed.target} (${shortDigest(pushed.digest)})\n`);
          }
          return { image, pushed };
        }).catch((err: unknown) => {
          throw withNextStep(err);
        });
        if (ctx.global.json) printJson(deps.io, result);
      },
    );
}
