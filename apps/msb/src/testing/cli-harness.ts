import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { CliDeps } from "../cli/context.js";
import { runCli } from "../program.js";
import type { ProcessTable } from "@msb/supervisor";
import { createFakeProcessTable } from "@msb/supervisor/testing";

/** Runs the CLI in-process against a temp MSB_HOME; captures stdout, stderr and the exit code. */
export async function runMsb(
  argv: readonly string[],
  options: { env?: NodeJS.ProcessEnv; table?: ProcessTable; home?: string } = {},
) {
  const home = options.home ?? mkdtempSync(join(tmpdir(), "msb-cli-"));
  let stdout = "";
  let stderr = "";
  const deps: CliDeps = {
    env: { MSB_HOME: home, PATH: process.env["PATH"] ?? "", ...options.env },
    io: {
      out: (t) => {
        stdout += t;
      },
      err: (t) => {
        stderr += t;
      },
      isTty: false,
    },
    table: options.table ?? createFakeProcessTable().table,
    root: "/nonexistent",
    entry: "/nonexistent/main.js",
    node: process.execPath,
  };
  const code = await runCli(argv, deps);
  return { code, stdout, stderr, home };
}
