import { describe, expect, it } from "vitest";
import { startOrder, stopOrder } from "./order.js";
import { planApply } from "./plan.js";
import { parseSandboxfile, startConfigOf } from "./sandboxfile.js";
import type { StateEntry } from "./state.js";

const project = parseSandboxfile(
  `sandboxes:
  web:
    image: nginx
    depends_on: [api]
  api:
    image: node:18
    depends_on: [db, cache]
  db:
    image: postgres:15
  cache:
    image: redis
  tools:
    image: busybox
`,
  "/p/Sandboxfile",
);

const entry = (name: string, namespace = "default"): StateEntry => {
  const sb = project.sandboxes.find((s) => s.name === name);
  return {
    namespace,
    name,
    config:
      sb === undefined
        ? { image: "old", volumes: [], ports: [], envs: [], scripts: {} }
        : startConfigOf(sb),
    startedAt: "2024-01-01T00:00:00.000Z",
  };
};

describe("dependency order", () => {
  it("starts dependencies first, keeping file order otherwise", () => {
    expect(startOrder(project.sandboxes)).toEqual(["db", "cache", "api", "web", "tools"]);
    expect(startOrder(project.sandboxes, ["web"])).toEqual(["db", "cache", "api", "web"]);
    expect(startOrder(project.sandboxes, ["tools"])).toEqual(["tools"]);
  });

  it("stops dependents first, and only what was named", () => {
    expect(stopOrder(project.sandboxes)).toEqual(["tools", "web", "api", "cache", "db"]);
    expect(stopOrder(project.sandboxes, ["db", "web"])).toEqual(["web", "db"]);
    expect(stopOrder(project.sandboxes, ["gone", "db"])).toEqual(["gone", "db"]);
  });
});

describe("planApply", () => {
  it("starts everything on a fresh project", () => {
    const plan = planApply(project, [], "default", new Set());
    expect(plan).toEqual(
      ["db", "cache", "api", "web", "tools"].map((name) => ({
        kind: "start",
        name,
        reason: "new",
      })),
    );
  });

  it("keeps unchanged running ones, restarts changed ones, stops removed ones, starts stopped ones", () => {
    const changedApi = { ...entry("api"), config: { ...entry("api").config, memory: 1024 } };
    const state = [
      entry("db"),
      entry("cache"),
      changedApi,
      entry("web"),
      entry("old"),
      entry("tools", "other"),
    ];
    const plan = planApply(project, state, "default", new Set(["db", "api", "web", "old"]));
    expect(plan).toEqual([
      { kind: "stop", name: "old", reason: "removed" },
      { kind: "stop", name: "api", reason: "changed" },
      { kind: "keep", name: "db" },
      { kind: "start", name: "cache", reason: "not running" },
      { kind: "start", name: "api", reason: "changed" },
      { kind: "keep", name: "web" },
      // Recorded only in another namespace: new here.
      { kind: "start", name: "tools", reason: "new" },
    ]);
  });
});
