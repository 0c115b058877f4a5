/** Finds the accelerator (`kvm`, `tcg`, `hvf`) wherever the health body reports it. */
export function acceleratorOf(health: unknown, depth = 0): string | undefined {
  if (health === null || typeof health !== "object" || depth > 3) return undefined;
  if (Array.isArray(health)) {
    for (const item of health) {
      const found = acceleratorOf(item, depth + 1);
      if (found !== undefined) return found;
    }
    return undefined;
  }
  const record = health as Record<string, unknown>;
  if (typeof record["accelerator"] === "string") return record["accelerator"];
  for (const value of Object.values(record)) {
    const found = acceleratorOf(value, depth + 1);
    if (found !== undefined) return found;
  }
  return undefined;
}
