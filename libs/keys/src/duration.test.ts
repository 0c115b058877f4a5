import { describe, expect, it } from "vitest";
import { parseDuration } from "./index.js";

describe("parseDuration", () => {
  it.each([
    ["90s", 90_000],
    ["30m", 1_800_000],
    ["24h", 86_400_000],
    ["7d", 604_800_000],
    ["2w", 1_209_600_000],
    ["1h30m", 5_400_000],
    [" 24H ", 86_400_000],
  ])("parses %j", (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(["", "24", "h", "1.5h", "-1h", "0s", "1y", "24 h", "100000000d"])(
    "rejects %j with the accepted forms",
    (text) => {
      expect(() => parseDuration(text)).toThrow(/e\.g\. 90s, 30m, 24h, 7d/);
    },
  );
});
