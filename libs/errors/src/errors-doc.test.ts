import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { ERROR_CODES, ERROR_CODE_INFO } from "./codes.js";

const doc = readFileSync(
  fileURLToPath(new URL("../../../docs/errors.md", import.meta.url)),
  "utf8",
);
const documented = [...doc.matchAll(/^## ([A-Z_]+)$/gm)].map((m) => m[1]);

describe("docs/errors.md", () => {
  it("has a section for every code and no section for a code that does not exist", () => {
    expect([...documented].sort()).toEqual([...ERROR_CODES].sort());
  });

  it("states the JSON-RPC code each section's code maps to", () => {
    for (const code of ERROR_CODES) {
      const section = doc.split(`## ${code}\n`)[1]?.split("\n## ")[0] ?? "";
      expect(section, code).toContain(`JSON-RPC \`${ERROR_CODE_INFO[code].jsonRpc}\``);
      expect(section, code).toMatch(/Next step: \S/);
    }
  });
});
