import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";
import { writeAtomic, type StartConfig } from "./sandboxfile.js";

/**
 * `.msb/state.json` next to the Sandboxfile: what this project started, with the exact
 * `sandbox.start` config, so that `apply` can stop sandboxes removed from the file and restart
 * changed ones, and `status` can show uptime. Written atomically after every change.
 */
const entrySchema = z.object({
  namespace: z.string(),
  name: z.string(),
  config: z.record(z.unknown()),
  startedAt: z.string(),
});
const stateSchema = z.object({
  version: z.literal(1),
  sandboxes: z.array(entrySchema),
});

export interface StateEntry {
  readonly namespace: string;
  readonly name: string;
  readonly config: StartConfig;
  /** ISO time of the last start by this project. */
  readonly startedAt: string;
}

export interface ProjectState {
  readonly file: string;
  entries: StateEntry[];
}

export function statePath(projectDir: string): string {
  return join(projectDir, ".msb", "state.json");
}

/** The state of the project in `projectDir`; missing or unreadable = nothing started. */
export function readState(projectDir: string): ProjectState {
  const file = statePath(projectDir);
  try {
    const parsed = stateSchema.parse(JSON.parse(readFileSync(file, "utf8")));
    return { file, entries: parsed.sandboxes as unknown as StateEntry[] };
  } catch {
    return { file, entries: [] };
  }
}

export function writeState(state: ProjectState): void {
  mkdirSync(join(state.file, ".."), { recursive: true });
  writeAtomic(state.file, `${JSON.stringify({ version: 1, sandboxes: state.entries }, null, 2)}\n`);
}

export function findEntry(
  state: ProjectState,
  namespace: string,
  name: string,
): StateEntry | undefined {
  return state.entries.find((e) => e.namespace === namespace && e.name === name);
}

export function recordStarted(
  state: ProjectState,
  namespace: string,
  name: string,
  config: StartConfig,
  now: Date,
): void {
  forget(state, namespace, name);
  state.entries.push({ namespace, name, config, startedAt: now.toISOString() });
  writeState(state);
}

export function recordStopped(state: ProjectState, namespace: string, name: string): void {
  forget(state, namespace, name);
  writeState(state);
}

function forget(state: ProjectState, namespace: string, name: string): void {
  state.entries = state.entries.filter((e) => !(e.namespace === namespace && e.name === name));
}
