import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { tempDir } from "@msb/testing";
import { describe, expect, it } from "vitest";
import { isErofsFile } from "./prepare.js";

describe("isErofsFile", () => {
  it("accepts the erofs magic at offset 1024 and nothing else", async () => {
    const dir = await tempDir("msb-erofs-magic-");
    try {
      const good = Buffer.alloc(4096);
      good.writeUInt32LE(0xe0f5e1e2, 1024);
      const swapped = Buffer.alloc(4096);
      swapped.writeUInt32BE(0xe0f5e1e2, 1024);
      const files = { good, zeros: Buffer.alloc(4096), empty: Buffer.alloc(0), swapped };
      for (const [name, data] of Object.entries(files)) {
        await writeFile(join(dir.path, name), data);
      }
      expect(await isErofsFile(join(dir.path, "good"))).toBe(true);
      expect(await isErofsFile(join(dir.path, "zeros"))).toBe(false);
      expect(await isErofsFile(join(dir.path, "empty"))).toBe(false);
      expect(await isErofsFile(join(dir.path, "swapped"))).toBe(false);
      expect(await isErofsFile(join(dir.path, "missing"))).toBe(false);
    } finally {
      await dir.remove();
    }
  });
});
