import { describe, expect, it } from "vitest";
import { mergeByTime } from "./log-files.js";
import { formatLogEntry, parseLogLine } from "./log-lines.js";

describe("log lines", () => {
  it("formats pino JSON for people: time, level, service, message, fields, error", () => {
    const line = JSON.stringify({
      level: 40,
      time: "2026-01-01T12:03:04.123Z",
      svc: "vmm-agent",
      pid: 5,
      msg: "kvm probe failed",
      accelerator: "tcg",
      err: { message: "emulation failure" },
    });
    expect(formatLogEntry(parseLogLine(line, "x"))).toBe(
      '12:03:04.123 WARN  vmm-agent: kvm probe failed accelerator=tcg err="emulation failure"',
    );
  });

  it("keeps lines that are not JSON (a crash trace) as entries of the service", () => {
    const entry = parseLogLine("TypeError: boom", "control-plane", 40);
    expect(entry).toMatchObject({ level: 40, svc: "control-plane", msg: "TypeError: boom" });
    expect(formatLogEntry(entry)).toBe("- WARN  control-plane: TypeError: boom");
  });

  it("merges several logs by time", () => {
    const at = (svc: string, time: string) =>
      parseLogLine(JSON.stringify({ level: 30, time, svc, msg: svc + time }), svc);
    const merged = mergeByTime([
      [at("a", "2026-01-01T00:00:01.000Z"), at("a", "2026-01-01T00:00:03.000Z")],
      [at("b", "2026-01-01T00:00:02.000Z")],
    ]);
    expect(merged.map((e) => e.svc)).toEqual(["a", "b", "a"]);
  });
});
