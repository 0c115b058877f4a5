import { describe, expect, it } from "vitest";
import { parseSmapsRollup, parseStatCpuTicks } from "./host.js";

describe("reading /proc for the concurrency scenario", () => {
  it("takes Rss and Pss from smaps_rollup, not the Pss_* breakdown", () => {
    const text = [
      "55d0c0000000-7ffd5e3f1000 ---p 00000000 00:00 0                          [rollup]",
      "Rss:              117964 kB",
      "Pss:               80123 kB",
      "Pss_Anon:          40000 kB",
      "Pss_File:          30000 kB",
    ].join("\n");
    expect(parseSmapsRollup(text)).toEqual({ rssKib: 117964, pssKib: 80123 });
  });

  it("adds utime and stime even when the command name holds spaces and parentheses", () => {
    const fields = ["S", "1", "2", "3", "0", "-1", "4194560", "100", "0", "0", "0", "250", "40"];
    const text = `4242 (qemu (x) 1) ${fields.join(" ")} 0 0 20 0 3 0 12345`;
    expect(parseStatCpuTicks(text)).toBe(290);
  });
});
