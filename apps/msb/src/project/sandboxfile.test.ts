import { describe, expect, it } from "vitest";
import { MsbError } from "@msb/errors";
import {
  addSandbox,
  findCycle,
  parseSandboxfile,
  removeSandboxes,
  sandboxfilePath,
  starterSandboxfile,
} from "./sandboxfile.js";

const FILE = "/proj/Sandboxfile";

function errorOf(text: string): MsbError {
  try {
    parseSandboxfile(text, FILE);
  } catch (err) {
    if (err instanceof MsbError) return err;
    throw err;
  }
  throw new Error("expected the Sandboxfile to be refused");
}

describe("parseSandboxfile", () => {
  it("applies defaults and resolves relative volume host paths against the file's directory", () => {
    const project = parseSandboxfile(
      "sandboxes:\n  db:\n    image: postgres:15\n    volumes: ['./data:/var/lib/pg', '/abs:/x:ro']\n  app:\n    image: node:18\n    depends_on: [db]\n",
      FILE,
    );
    expect(project.sandboxes.map((s) => s.name)).toEqual(["db", "app"]);
    expect(project.sandboxes[0]).toMatchObject({
      shell: "/bin/sh",
      volumes: ["/proj/data:/var/lib/pg", "/abs:/x:ro"],
      ports: [],
      scripts: {},
    });
    expect(project.sandboxes[1]?.dependsOn).toEqual(["db"]);
  });

  it("accepts the starter file (no sandboxes yet)", () => {
    expect(parseSandboxfile(starterSandboxfile("demo"), FILE).sandboxes).toEqual([]);
  });

  it("names file, line and field of an unknown key", () => {
    const err = errorOf("sandboxes:\n  app:\n    image: x\n    imgae: y\n");
    expect(err.code).toBe("SANDBOXFILE_INVALID");
    expect(err.message).toContain("/proj/Sandboxfile:4: sandboxes.app.imgae: unknown key");
    expect(err.details).toMatchObject({ line: 4, field: "sandboxes.app.imgae" });
    expect(errorOf("sandboxs:\n  app: {}\n").message).toContain(":1: sandboxs: unknown key");
  });

  it("names the line of a wrong type, a bad list entry and a bad sandbox name", () => {
    expect(errorOf("sandboxes:\n  app:\n    image: x\n    memory: lots\n").message).toContain(
      ":4: sandboxes.app.memory: expected number, got string",
    );
    expect(
      errorOf("sandboxes:\n  app:\n    image: x\n    ports:\n      - 80:80\n      - eighty\n")
        .message,
    ).toContain(":6: sandboxes.app.ports[1]: must look like");
    expect(errorOf("sandboxes:\n  ok:\n    image: x\n  -bad:\n    image: y\n").message).toContain(
      ":4: sandboxes.-bad: sandbox name must match",
    );
    expect(errorOf("sandboxes:\n  app:\n    memory: 1\n").message).toContain(
      "sandboxes.app.image: expected string, got undefined",
    );
  });

  it("reports YAML syntax errors with their line", () => {
    expect(errorOf("sandboxes:\n  app:\n    image: [x\n").message).toMatch(
      /^\/proj\/Sandboxfile:\d+: not valid YAML/,
    );
  });

  it("refuses unknown dependencies and names a cycle", () => {
    expect(errorOf("sandboxes:\n  app:\n    image: x\n    depends_on: [db]\n").message).toContain(
      ':4: sandboxes.app.depends_on[0]: no sandbox named "db"',
    );
    const cycle = errorOf(
      "sandboxes:\n  a:\n    image: x\n    depends_on: [b]\n  b:\n    image: x\n    depends_on: [c]\n  c:\n    image: x\n    depends_on: [a]\n",
    );
    expect(cycle.message).toContain("dependency cycle a -> b -> c -> a");
    expect(findCycle([{ name: "s", dependsOn: ["s"] }])).toEqual(["s", "s"]);
    expect(findCycle([{ name: "a", dependsOn: [] }])).toBeUndefined();
  });
});

describe("editing", () => {
  const original = `# my project
meta:
  name: demo # trailing

sandboxes:
  # the database
  db:
    image: postgres:15 # pinned
  web:
    image: nginx
`;

  it("adds a sandbox keeping comments and key order", () => {
    const out = addSandbox(original, FILE, "app", {
      image: "microsandbox/python",
      ports: ["18080:8000"],
      scripts: { start: "python3 -m http.server 8000" },
      depends_on: ["db"],
    });
    expect(out.startsWith(original.trimEnd())).toBe(true);
    expect(out).toContain("# the database");
    expect(out).toContain("postgres:15 # pinned");
    const names = parseSandboxfile(out, FILE).sandboxes.map((s) => s.name);
    expect(names).toEqual(["db", "web", "app"]);
    expect(parseSandboxfile(out, FILE).sandboxes[2]).toMatchObject({
      ports: ["18080:8000"],
      scripts: { start: "python3 -m http.server 8000" },
      dependsOn: ["db"],
    });
  });

  it("adds to the starter file and to an empty flow map", () => {
    const starter = addSandbox(starterSandboxfile("demo"), FILE, "app", { image: "x" });
    expect(starter).toContain("# Sandboxfile: the sandboxes of this project");
    expect(parseSandboxfile(starter, FILE).sandboxes.map((s) => s.name)).toEqual(["app"]);
    const flow = addSandbox("sandboxes: {}\n", FILE, "app", { image: "x" });
    expect(flow).toBe("sandboxes:\n  app:\n    image: x\n");
  });

  it("refuses a duplicate name and a result that would be invalid", () => {
    expect(() => addSandbox(original, FILE, "db", { image: "x" })).toThrow(/already in/);
    expect(() => addSandbox(original, FILE, "app", { image: "x", depends_on: ["nope"] })).toThrow(
      /no sandbox named "nope"/,
    );
  });

  it("removes sandboxes keeping the rest, and refuses to break a dependency", () => {
    const out = removeSandboxes(original, FILE, ["web"]);
    expect(out).toContain("# the database");
    expect(out).toContain("postgres:15 # pinned");
    expect(out).not.toContain("nginx");
    const linked = addSandbox(original, FILE, "app", { image: "x", depends_on: ["db"] });
    expect(() => removeSandboxes(linked, FILE, ["db"])).toThrow(/"app" depends on db/);
    expect(
      parseSandboxfile(removeSandboxes(linked, FILE, ["db", "app"]), FILE).sandboxes,
    ).toHaveLength(1);
    expect(() => removeSandboxes(original, FILE, ["nope"])).toThrow(/no sandbox "nope"/);
  });
});

describe("sandboxfilePath", () => {
  it("takes a directory or a file", () => {
    expect(sandboxfilePath(undefined, "/work")).toBe("/work/Sandboxfile");
    expect(sandboxfilePath("/tmp", "/work")).toBe("/tmp/Sandboxfile");
    expect(sandboxfilePath("sub/", "/work")).toBe("/work/sub/Sandboxfile");
    expect(sandboxfilePath("my.yaml", "/work")).toBe("/work/my.yaml");
  });
});
