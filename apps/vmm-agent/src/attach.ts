import type { OutputChunk, ProcessHandle } from "@msb/agent-protocol";
import { MsbError } from "@msb/errors";
import { parseEnv } from "./guest/env.js";
import type { GuestAccess, OutputStreamName } from "./vms/types.js";

export type { GuestAccess };

/** What an attached session runs. */
export interface AttachStartParams {
  readonly vmId: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly env: readonly string[];
  readonly workdir: string;
  /** A pseudo-terminal of this size; undefined = pipes. */
  readonly pty: { readonly rows: number; readonly cols: number } | undefined;
}

/** What the caller sends after the start. */
export type AttachInput =
  | { readonly kind: "stdin"; readonly data: Buffer }
  | { readonly kind: "resize"; readonly rows: number; readonly cols: number }
  | { readonly kind: "signal"; readonly signal: number }
  | { readonly kind: "eof" };

/** What the caller gets: `started` first, `exit` last. */
export type AttachEvent =
  | { readonly kind: "started"; readonly pid: number }
  | { readonly kind: "output"; readonly stream: OutputStreamName; readonly data: Buffer }
  | {
      readonly kind: "exit";
      readonly exitCode: number;
      readonly signal: number;
      readonly durationMs: number;
    };

/** Terminal sizes outside 1..1000 cells are refused (a typo, not a terminal). */
const MAX_CELLS = 1000;
/**
 * Unread output kept before the guest process is paused: small, so a slow client (a terminal
 * over a bad link) pauses the process instead of growing memory here.
 */
const HIGH_WATER_BYTES = 256 * 1024;
/** Agent requests that are not the process itself (start, resize, signal) get this long. */
const AGENT_CALL_TIMEOUT_MS = 30_000;

function invalid(message: string, details: Record<string, unknown> = {}): MsbError {
  return new MsbError("INVALID_PARAMS", message, { details });
}

/** Checks a terminal size; throws INVALID_PARAMS naming the bad field. */
export function checkSize(rows: number, cols: number): void {
  for (const [name, v] of [
    ["rows", rows],
    ["cols", cols],
  ] as const) {
    if (!Number.isInteger(v) || v < 1 || v > MAX_CELLS) {
      throw invalid(`pty ${name} must be an integer from 1 to ${MAX_CELLS}, got ${v}.`, {
        [name]: v,
      });
    }
  }
}

/**
 * Runs one interactive process in the guest: stdin, resizes and signals from `inputs` go to
 * it while its output comes back, with flow control both ways (output is read from the agent
 * only as fast as the caller pulls events; stdin is forwarded one message at a time, each
 * waiting for the guest's window). When the caller stops iterating before the exit — it went
 * away — the process group is killed. Ending `inputs` without `eof` leaves the process
 * running (a terminal's input may end before its output does).
 */
export async function* attachProcess(
  guest: GuestAccess,
  start: AttachStartParams,
  inputs: AsyncIterable<AttachInput>,
  signal: AbortSignal,
): AsyncGenerator<AttachEvent> {
  if (start.command === "") throw invalid("command is required.");
  if (start.pty !== undefined) checkSize(start.pty.rows, start.pty.cols);
  const env = parseEnv(start.env, "env");
  let handle: ProcessHandle;
  try {
    handle = await guest.client.exec(
      {
        argv: [start.command, ...start.args],
        env,
        // Without one, the agent uses the sandbox's configured workdir.
        ...(start.workdir === "" ? {} : { cwd: start.workdir }),
        stdin: true,
        timeoutMs: 0,
        ...(start.pty === undefined ? {} : { pty: { rows: start.pty.rows, cols: start.pty.cols } }),
      },
      { signal, timeoutMs: AGENT_CALL_TIMEOUT_MS, highWaterMarkBytes: HIGH_WATER_BYTES },
    );
  } catch (err) {
    throw await guest.translate(err);
  }
  let exited = false;
  let failPump!: (err: unknown) => void;
  const pumpFailed = new Promise<never>((_, reject) => (failPump = reject));
  pumpFailed.catch(() => undefined);
  void (async () => {
    for await (const input of inputs) {
      if (exited) return;
      switch (input.kind) {
        case "stdin":
          await handle.writeStdin(input.data);
          break;
        case "eof":
          await handle.closeStdin();
          break;
        case "resize":
          checkSize(input.rows, input.cols);
          if (start.pty !== undefined) {
            await handle.resize(input.rows, input.cols, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
          }
          break;
        case "signal":
          if (!Number.isInteger(input.signal) || input.signal < 1 || input.signal > 64) {
            throw invalid("signal must be 1-64.", { signal: input.signal });
          }
          await handle.signal(input.signal, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
          break;
      }
    }
  })().catch((err: unknown) => {
    // Input that arrives while the process is exiting is dropped, not an error.
    if (!exited) failPump(err);
  });
  // The caller going away must end the wait even while the process is silent (a shell at
  // its prompt), so that the finally below kills it.
  const callerGone = new Promise<never>((_, reject) => {
    const gone = (): void =>
      reject(new MsbError("CANCELLED", "The attach caller went away; the process was killed."));
    if (signal.aborted) gone();
    else signal.addEventListener("abort", gone, { once: true });
  });
  callerGone.catch(() => undefined);
  try {
    yield { kind: "started", pid: handle.pid };
    const output = handle.output();
    for (;;) {
      const next = await Promise.race([output.next(), pumpFailed, callerGone]);
      if (next.done === true) break;
      const chunk: OutputChunk = next.value;
      yield { kind: "output", stream: chunk.stream, data: chunk.data };
    }
    const exit = await handle.exit;
    exited = true;
    yield {
      kind: "exit",
      exitCode: exit.exitCode,
      signal: exit.signal ?? 0,
      durationMs: exit.durationMs,
    };
  } catch (err) {
    throw await guest.translate(err);
  } finally {
    if (!exited) {
      exited = true;
      await handle.kill({ timeoutMs: AGENT_CALL_TIMEOUT_MS }).catch(() => undefined);
    }
  }
}
