import type { Command } from "commander";
import type { CliDeps } from "../../cli/context.js";
import { buildCommand } from "./build.js";
import { imagesCommand } from "./images.js";
import { pullCommand } from "./pull.js";
import { rmiCommand } from "./rmi.js";

/** `msb pull`, `msb images`, `msb rmi`, `msb build`: top-level verbs, as docs/cli.md has them. */
export function imageCommands(deps: CliDeps): Command[] {
  return [pullCommand(deps), imagesCommand(deps), rmiCommand(deps), buildCommand(deps)];
}
