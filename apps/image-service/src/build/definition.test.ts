import { describe, expect, it } from "vitest";
import { validateDefinition } from "./definition.js";

const base = { name: "microsandbox/python", base: { debian: "bookworm" } };

describe("validateDefinition", () => {
  it("fills defaults", () => {
    expect(validateDefinition(base, "images/x/image.yaml")).toMatchObject({
      tag: "latest",
      base: { debian: "bookworm", variant: "minbase" },
      packages: [],
      env: {},
      workdir: "/",
    });
  });

  it.each<[string, unknown, string]>([
    ["an unknown top-level key", { ...base, pakages: ["x"] }, "unknown key 'pakages' at top level"],
    [
      "an unknown nested key",
      { ...base, files: [{ src: "a", dest: "/a", owner: "root" }] },
      "unknown key 'owner' at files.0",
    ],
    [
      "an unknown base key",
      { ...base, base: { debian: "bookworm", mirror: "x" } },
      "unknown key 'mirror' at base",
    ],
    ["a relative workdir", { ...base, workdir: "work" }, "workdir: must be an absolute path"],
    [
      "a bad package name",
      { ...base, packages: ["Python3"] },
      "packages.0: is not a Debian package name",
    ],
    [
      "packages on an OCI base",
      { name: "a/b", base: { image: "python:3.12" }, packages: ["curl"] },
      "packages: needs a Debian base",
    ],
    ["a missing name", { base: { debian: "bookworm" } }, "name: Required"],
  ])("refuses %s, naming the key and the file", (_what, doc, message) => {
    expect(() => validateDefinition(doc, "images/x/image.yaml")).toThrow(
      expect.objectContaining({
        code: "IMAGE_DEFINITION_INVALID",
        message: expect.stringMatching(
          new RegExp(`^images/x/image\\.yaml: .*${message.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}`),
        ) as unknown,
      }) as Error,
    );
  });
});
