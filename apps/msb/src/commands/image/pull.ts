import { Command } from "commander";
import { printJson, type CliDeps } from "../../cli/context.js";
import { formatBytes } from "../../cli/table.js";
import { shortDigest } from "./progress.js";
import { imageSummarySchema, parseAnswer } from "@msb/wire";
import { imageContext, interruptible, withNextStep } from "./shared.js";

export function pullCommand(deps: CliDeps): Command {
  return new Command("pull")
    .description("pull an image from a registry into the server's image store")
    .argument("<reference>", "[REGISTRY/]REPOSITORY[:TAG], e.g. microsandbox/python")
    .option("--platform <os/arch>", "platform to pull (default linux/amd64)")
    .addHelpText(
      "after",
      `
Progress goes to stderr: a bar per layer on a terminal, one line per layer event otherwise.
Layers already in the store are not downloaded again. Loopback registries are reached over
plain HTTP.

Examples:
  msb pull microsandbox/python
  msb pull 127.0.0.1:5000/team/app:1
  msb pull --json docker.io/library/alpine:3.20 | jq .digest

Exit codes: 0 · 2 bad reference · 3 key not allowed · 6 image not found, registry unreachable
or refused · 10 server not running.`,
    )
    .action(async (reference: string, options: { platform?: string }, cmd: Command) => {
      const ctx = await imageContext(cmd, deps);
      const raw = await interruptible((signal) =>
        ctx.client
          .stream(
            "image.pull",
            {
              reference,
              ...(options.platform === undefined ? {} : { platform: options.platform }),
            },
            ctx.progress,
            signal,
          )
          .catch((err: unknown) => {
            throw withNextStep(err);
          }),
      );
      const image = parseAnswer(imageSummarySchema, "image.pull", raw);
      if (ctx.global.json) printJson(deps.io, image);
      else
        deps.io.out(
          `pulled ${image.reference} (${shortDigest(image.digest)}, ${formatBytes(image.size_bytes)})\n`,
        );
    });
}
