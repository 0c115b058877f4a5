import { describe, expect, it } from "vitest";
import { formatReference, parseReference } from "./reference.js";

const D = `sha256:${"a".repeat(64)}`;

describe("parseReference", () => {
  it.each([
    ["python", "docker.io/library/python:latest"],
    ["python:3.12", "docker.io/library/python:3.12"],
    [`library/python@${D}`, `docker.io/library/python@${D}`],
    [`python:3.12@${D}`, `docker.io/library/python:3.12@${D}`],
    ["microsandbox/python", "docker.io/microsandbox/python:latest"],
    ["index.docker.io/library/python", "docker.io/library/python:latest"],
    ["docker.io/python", "docker.io/library/python:latest"],
    ["localhost:5000/microsandbox/python", "localhost:5000/microsandbox/python:latest"],
    ["localhost/python:1", "localhost/python:1"],
    ["127.0.0.1:5000/a/b/c:v1.2-rc_3", "127.0.0.1:5000/a/b/c:v1.2-rc_3"],
    ["ghcr.io/owner/img", "ghcr.io/owner/img:latest"],
    ["[::1]:5000/img", "[::1]:5000/img:latest"],
    ["a/b", "docker.io/a/b:latest"],
    ["my_app.v2__x-y", "docker.io/library/my_app.v2__x-y:latest"],
  ])("%s → %s", (input, expected) => {
    expect(formatReference(parseReference(input))).toBe(expected);
  });

  it("splits the parts", () => {
    expect(parseReference("localhost:5000/microsandbox/python:3")).toEqual({
      registry: "localhost:5000",
      repository: "microsandbox/python",
      tag: "3",
      digest: undefined,
    });
    expect(parseReference(`python@${D}`).tag).toBeUndefined();
  });

  it.each([
    ["", "empty"],
    ["Python", "not a valid name component"],
    ["python:", "tag '' is not valid"],
    ["python:-x", "tag '-x' is not valid"],
    ["python@sha256:abc", "is not sha256:<64 hex>"],
    [`python@md5:${"a".repeat(32)}`, "is not sha256"],
    ["http://localhost/x", "URL scheme"],
    ["a//b", "empty component"],
    ["localhost:5000/", "repository name is empty"],
    ["a/-b", "not a valid name component"],
    ["a_/b", "not a valid name component"],
    ["bad_host:5000:x/y", "is not a host[:port]"],
    [`x/${"a".repeat(260)}`, "longer than 255"],
  ])("refuses %j (%s)", (input, reason) => {
    expect(() => parseReference(input)).toThrow(
      expect.objectContaining({
        code: "IMAGE_REFERENCE_INVALID",
        message: expect.stringContaining(reason) as unknown,
      }) as Error,
    );
  });
});
