/**
 * Thrown by a command whose outcome is an exit code rather than an error, e.g. `msb run` and
 * `msb exe` passing on the exit code of the command they ran. `runCli` returns `code` and
 * prints nothing.
 */
export class CommandExit extends Error {
  constructor(readonly code: number) {
    super(`exit ${code}`);
    this.name = "CommandExit";
  }
}
