import type { ProcessTable } from "@msb/supervisor";

/** Where the CLI writes; tests capture it. */
export interface CliIo {
  out(text: string): void;
  err(text: string): void;
  /** True when stderr is a terminal (progress lines are then worth printing). */
  readonly isTty: boolean;
}

/** Everything a command needs from the outside world, built once in main.ts. */
export interface CliDeps {
  readonly env: NodeJS.ProcessEnv;
  readonly io: CliIo;
  readonly table: ProcessTable;
  /** Repository (install) root: holds `apps/*\/dist` and `tools/`. */
  readonly root: string;
  /** Absolute path of this CLI's entry script, for `--detach` to re-spawn itself. */
  readonly entry: string;
  /** The node binary running the CLI. */
  readonly node: string;
}

/** Flags every command accepts. */
export interface GlobalOptions {
  readonly json: boolean;
  readonly debug: boolean;
  /** Absolute `MSB_HOME`. */
  readonly home: string;
}

export function printJson(io: CliIo, value: unknown): void {
  io.out(`${JSON.stringify(value, null, 2)}\n`);
}
