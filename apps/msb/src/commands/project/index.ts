import type { Command } from "commander";
import type { CliDeps } from "../../cli/context.js";
import { exeCommand } from "../sandbox/exe.js";
import { logCommand } from "../sandbox/log.js";
import { runCommandCommand } from "../sandbox/run.js";
import { shellCommand } from "../sandbox/shell.js";
import { addCommand } from "./add.js";
import { applyCommand } from "./apply.js";
import { downCommand } from "./down.js";
import { initCommand } from "./init.js";
import { listCommand } from "./list.js";
import { removeCommand } from "./remove.js";
import { statusCommand } from "./status.js";
import { upCommand } from "./up.js";

/** The project (Sandboxfile) and sandbox commands, top-level verbs of `msb`. */
export function projectCommands(deps: CliDeps): Command[] {
  return [
    initCommand(deps),
    addCommand(deps),
    removeCommand(deps),
    listCommand(deps),
    upCommand(deps),
    applyCommand(deps),
    downCommand(deps),
    statusCommand(deps),
    runCommandCommand(deps),
    shellCommand(deps),
    exeCommand(deps),
    logCommand(deps),
  ];
}
