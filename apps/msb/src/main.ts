#!/usr/bin/env node
import { fileURLToPath } from "node:url";
import { dirname, resolve } from "node:path";
import { runCli } from "./program.js";
import { createProcfsTable } from "@msb/supervisor";

// Composition root: build the real dependencies, run, exit with the command's code.
const entry = fileURLToPath(import.meta.url);
const code = await runCli(process.argv.slice(2), {
  env: process.env,
  io: {
    out: (text) => process.stdout.write(text),
    err: (text) => process.stderr.write(text),
    isTty: process.stderr.isTTY,
  },
  table: createProcfsTable(),
  // apps/msb/dist/main.js → repository root.
  root: resolve(dirname(entry), "..", "..", ".."),
  entry,
  node: process.execPath,
});
process.exitCode = code;
