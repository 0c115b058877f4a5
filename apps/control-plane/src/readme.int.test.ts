import { readFile } from "node:fs/promises";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHarness, type Harness } from "./test-support/harness.js";

// STYLE: the README's examples are executed by a test.
describe("README example", () => {
  let h: Harness;
  let lines: string[];
  beforeAll(async () => {
    h = await createHarness({ dev: true });
    const readme = await readFile(new URL("../README.md", import.meta.url), "utf8");
    const block = /```json rpc\n([\s\S]*?)```/.exec(readme);
    lines = (block?.[1] ?? "").split("\n").filter((l) => l.trim() !== "");
  });
  afterAll(async () => {
    await h.close();
  });

  it("runs every request of the JSON-RPC example to a result", async () => {
    expect(lines.length).toBeGreaterThanOrEqual(5);
    for (const line of lines) {
      const res = await h.post(line);
      const body = res.json<{ result?: unknown; error?: unknown }>();
      expect(body.error, line).toBeUndefined();
      expect(res.statusCode, line).toBe(200);
    }
    expect(h.store.get("default", "demo")?.state).toBe("stopped");
  });
});
