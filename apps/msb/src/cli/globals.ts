import type { Command } from "commander";
import { resolveHome } from "@msb/supervisor";
import type { GlobalOptions } from "./context.js";

/** The global flags as a command sees them (they may be given before or after the verb). */
export function globalOptions(cmd: Command, env: NodeJS.ProcessEnv): GlobalOptions {
  const all = cmd.optsWithGlobals<{ json?: boolean; debug?: boolean; home?: string }>();
  return {
    json: all.json === true,
    debug: all.debug === true,
    home: resolveHome(all.home, env),
  };
}
