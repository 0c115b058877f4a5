import type { ProjectSandbox } from "./sandboxfile.js";

type Node = Pick<ProjectSandbox, "name" | "dependsOn">;

/**
 * `names` plus everything they depend on (transitively), dependencies first; ties keep file
 * order. The file has no cycles (parseSandboxfile refused them).
 */
export function startOrder(sandboxes: readonly Node[], names?: readonly string[]): string[] {
  const byName = new Map(sandboxes.map((s) => [s.name, s]));
  const wanted = names === undefined || names.length === 0 ? sandboxes.map((s) => s.name) : names;
  const out: string[] = [];
  const seen = new Set<string>();
  const visit = (name: string) => {
    if (seen.has(name)) return;
    seen.add(name);
    for (const dep of byName.get(name)?.dependsOn ?? []) visit(dep);
    out.push(name);
  };
  // Visit in file order so independent sandboxes keep the order they are written in.
  const set = new Set(wanted);
  for (const s of sandboxes) if (set.has(s.name)) visit(s.name);
  for (const name of wanted) visit(name);
  return out;
}

/**
 * The order in which `down` stops `names` (all when empty): dependents before their
 * dependencies. Only the named sandboxes are stopped; names the file does not know (left in
 * the state file) come first.
 */
export function stopOrder(sandboxes: readonly Node[], names?: readonly string[]): string[] {
  const reversed = startOrder(sandboxes).reverse();
  if (names === undefined || names.length === 0) return reversed;
  const known = new Set(reversed);
  const wanted = new Set(names);
  return [...names.filter((n) => !known.has(n)), ...reversed.filter((n) => wanted.has(n))];
}
