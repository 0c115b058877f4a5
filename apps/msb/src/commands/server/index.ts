import { Command } from "commander";
import type { CliDeps } from "../../cli/context.js";
import { serverKeygenCommand } from "./keygen.js";
import { serverLogCommand } from "./log.js";
import { serverStartCommand } from "./start.js";
import { serverStatusCommand } from "./status.js";
import { serverStopCommand } from "./stop.js";

/** `msb server …`: run, stop, inspect the local server and issue its API keys. */
export function serverCommand(deps: CliDeps): Command {
  return new Command("server")
    .description("run and manage the msb server (control plane, image service, VMM agent)")
    .addCommand(serverStartCommand(deps))
    .addCommand(serverStopCommand(deps))
    .addCommand(serverStatusCommand(deps))
    .addCommand(serverKeygenCommand(deps))
    .addCommand(serverLogCommand(deps));
}
