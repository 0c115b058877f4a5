import type { ErrorCode } from "@msb/errors";

/**
 * A sandbox's life: `starting → running → stopping → stopped`, and `failed` (with the reason
 * and the error code) from any live state. `running` means the guest agent answered.
 */
export type SandboxState = "starting" | "running" | "stopping" | "stopped" | "failed";

export const SANDBOX_STATES: readonly SandboxState[] = [
  "starting",
  "running",
  "stopping",
  "stopped",
  "failed",
];

export type SandboxEvent =
  /** sandbox.start accepted (new sandbox, or one that is stopped or failed). */
  | { readonly type: "start" }
  /** The VM is up and its guest agent said READY. */
  | { readonly type: "ready" }
  /** Boot failed, the VM died or was lost, or stopping it failed. */
  | { readonly type: "fail"; readonly reason: string; readonly code: ErrorCode }
  /** sandbox.stop accepted. */
  | { readonly type: "stop" }
  /** The VM is gone; `reason` defaults to "stopped with sandbox.stop". */
  | { readonly type: "stopped"; readonly reason?: string };

export interface StateAfter {
  readonly state: SandboxState;
  /** Why the sandbox is failed or stopped; null while it is live. */
  readonly reason: string | null;
  readonly errorCode: ErrorCode | null;
}

const ALLOWED: Readonly<Record<SandboxEvent["type"], readonly (SandboxState | "new")[]>> = {
  start: ["new", "stopped", "failed"],
  ready: ["starting"],
  fail: ["starting", "running", "stopping"],
  stop: ["running", "failed"],
  stopped: ["stopping"],
};

/** Thrown for a transition the machine does not have: a bug in the caller, never user input. */
export class IllegalTransitionError extends Error {
  override readonly name = "IllegalTransitionError";
  constructor(from: SandboxState | "new", event: SandboxEvent["type"]) {
    super(`illegal sandbox transition: ${from} --${event}-->`);
  }
}

/** The pure transition function; `from` is `"new"` for a sandbox not in the database yet. */
export function transition(from: SandboxState | "new", event: SandboxEvent): StateAfter {
  if (!ALLOWED[event.type].includes(from)) throw new IllegalTransitionError(from, event.type);
  switch (event.type) {
    case "start":
      return { state: "starting", reason: null, errorCode: null };
    case "ready":
      return { state: "running", reason: null, errorCode: null };
    case "fail":
      return { state: "failed", reason: event.reason, errorCode: event.code };
    case "stop":
      return { state: "stopping", reason: null, errorCode: null };
    case "stopped":
      return {
        state: "stopped",
        reason: event.reason ?? "stopped with sandbox.stop",
        errorCode: null,
      };
  }
}
