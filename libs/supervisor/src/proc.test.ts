import { describe, expect, it } from "vitest";
import { createProcfsTable, parseProcStat } from "./proc.js";

describe("parseProcStat", () => {
  it("reads state, ppid and start time even when comm holds spaces and parentheses", () => {
    const stat =
      "1234 (node (my) app) S 1 1234 1234 0 -1 4194560 100 0 0 0 5 3 0 0 20 0 11 0 987654 1000 100";
    expect(parseProcStat(1234, stat)).toEqual({
      pid: 1234,
      state: "S",
      ppid: 1,
      startTime: "987654",
    });
    expect(parseProcStat(1, "garbage")).toBeUndefined();
  });

  it("matches this process in the real /proc", () => {
    const table = createProcfsTable();
    expect(table.info(process.pid)?.state).toMatch(/[RS]/);
    expect(table.cmdline(process.pid)?.[0]).toContain("node");
    expect(table.info(2 ** 22 + 1)).toBeUndefined();
  });
});
