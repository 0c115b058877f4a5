import { describe, expect, it } from "vitest";
import { IllegalTransitionError, transition, type SandboxState } from "./state.js";

describe("sandbox state machine", () => {
  it("walks the happy path starting → running → stopping → stopped", () => {
    expect(transition("new", { type: "start" }).state).toBe("starting");
    expect(transition("starting", { type: "ready" }).state).toBe("running");
    expect(transition("running", { type: "stop" }).state).toBe("stopping");
    expect(transition("stopping", { type: "stopped" })).toEqual({
      state: "stopped",
      reason: "stopped with sandbox.stop",
      errorCode: null,
    });
  });

  it("records why a sandbox failed, and lets it start again", () => {
    const failed = transition("starting", {
      type: "fail",
      reason: "QEMU exited: kernel panic",
      code: "VM_BOOT_FAILED",
    });
    expect(failed).toEqual({
      state: "failed",
      reason: "QEMU exited: kernel panic",
      errorCode: "VM_BOOT_FAILED",
    });
    expect(transition("failed", { type: "start" })).toEqual({
      state: "starting",
      reason: null,
      errorCode: null,
    });
    expect(transition("stopped", { type: "start" }).state).toBe("starting");
  });

  it.each<[SandboxState | "new", Parameters<typeof transition>[1]["type"]]>([
    ["running", "start"],
    ["starting", "start"],
    ["stopped", "stop"],
    ["new", "ready"],
    ["running", "ready"],
    ["stopped", "fail"],
    ["running", "stopped"],
  ])("refuses %s --%s-->", (from, type) => {
    const event =
      type === "fail" ? { type, reason: "x", code: "INTERNAL" as const } : ({ type } as const);
    expect(() => transition(from, event)).toThrow(IllegalTransitionError);
  });
});
