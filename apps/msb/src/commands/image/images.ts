import { Command } from "commander";
import { printJson, type CliDeps } from "../../cli/context.js";
import { formatBytes, formatTable } from "../../cli/table.js";
import { shortDigest } from "./progress.js";
import { imageListSchema, parseAnswer } from "@msb/wire";
import { imageContext, withNextStep } from "./shared.js";

export interface ImageRow {
  readonly reference: string;
  readonly digest: string;
  readonly size_bytes: number;
  readonly stored_at?: string | null | undefined;
}

/** `2026-11-27 06:14` (UTC), or `-`. */
function stored(iso: string | null | undefined): string {
  if (iso === null || iso === undefined) return "-";
  return iso.slice(0, 16).replace("T", " ");
}

export function renderImages(images: readonly ImageRow[]): string {
  if (images.length === 0) return "no images; pull one with `msb pull microsandbox/python`\n";
  const table = formatTable(
    ["reference", "digest", "size", "stored (utc)"],
    images.map((i) => [
      i.reference,
      shortDigest(i.digest),
      formatBytes(i.size_bytes),
      stored(i.stored_at),
    ]),
  );
  return `${table}\n`;
}

export function imagesCommand(deps: CliDeps): Command {
  return new Command("images")
    .description("list the images in the server's image store")
    .addHelpText(
      "after",
      `
Examples:
  msb images
  msb images --json | jq -r '.images[].reference'

Exit codes: 0 · 3 key not allowed · 10 server unreachable.`,
    )
    .action(async (_options: unknown, cmd: Command) => {
      const ctx = await imageContext(cmd, deps);
      const raw = await ctx.client.call("image.list", {}).catch((err: unknown) => {
        throw withNextStep(err);
      });
      const { images } = parseAnswer(imageListSchema, "image.list", raw);
      if (ctx.global.json) printJson(deps.io, { images });
      else deps.io.out(renderImages(images));
    });
}
