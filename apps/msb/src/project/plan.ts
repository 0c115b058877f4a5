import { isDeepStrictEqual } from "node:util";
import { startOrder, stopOrder } from "./order.js";
import { startConfigOf, type Project } from "./sandboxfile.js";
import type { StateEntry } from "./state.js";

/** One step of `msb apply`, in the order they must run. */
export type ApplyAction =
  | { readonly kind: "stop"; readonly name: string; readonly reason: "removed" | "changed" }
  | {
      readonly kind: "start";
      readonly name: string;
      readonly reason: "new" | "changed" | "not running";
    }
  | { readonly kind: "keep"; readonly name: string };

/**
 * What `apply` does to make `namespace` match the file: stop what the project started but the
 * file no longer has, restart what changed (the config sent to `sandbox.start` differs from
 * the one recorded), start what is new or not running, keep the rest. Stops run first
 * (dependents before dependencies), then starts (dependencies first).
 */
export function planApply(
  project: Project,
  state: readonly StateEntry[],
  namespace: string,
  running: ReadonlySet<string>,
): ApplyAction[] {
  const recorded = new Map(
    state.filter((e) => e.namespace === namespace).map((e) => [e.name, e] as const),
  );
  const inFile = new Set(project.sandboxes.map((s) => s.name));
  const changed = new Set(
    project.sandboxes
      .filter((sb) => {
        const entry = recorded.get(sb.name);
        return entry !== undefined && !isDeepStrictEqual(entry.config, startConfigOf(sb));
      })
      .map((sb) => sb.name),
  );
  const removed = [...recorded.keys()].filter((n) => !inFile.has(n));
  const actions: ApplyAction[] = [
    ...removed.map((name): ApplyAction => ({ kind: "stop", name, reason: "removed" })),
    ...stopOrder(project.sandboxes)
      .filter((n) => changed.has(n))
      .map((name): ApplyAction => ({ kind: "stop", name, reason: "changed" })),
  ];
  for (const name of startOrder(project.sandboxes)) {
    if (changed.has(name)) actions.push({ kind: "start", name, reason: "changed" });
    else if (!recorded.has(name)) actions.push({ kind: "start", name, reason: "new" });
    else if (!running.has(name)) actions.push({ kind: "start", name, reason: "not running" });
    else actions.push({ kind: "keep", name });
  }
  return actions;
}
