import type { FastifyBaseLogger } from "fastify";
import type { RawData, WebSocket } from "ws";
import { z } from "zod";
import { MsbError, toJsonRpcError, toMsbError } from "@msb/errors";
import type { Caller } from "../../auth/caller.js";
import type { AttachInput, AttachSession } from "../../sandboxes/backends.js";
import { attachParamsSchema, parseParams, terminalSizeSchema } from "../../sandboxes/schemas.js";
import type { SandboxService } from "../../sandboxes/service.js";

/** Stream tags: the first byte of every binary frame the server sends. */
export const STREAM_TAG = { stdout: 1, stderr: 2 } as const;

/** Signal names a client may send instead of numbers (Linux numbering, x86-64 and arm64). */
const SIGNALS: Readonly<Record<string, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGUSR2: 12,
  SIGTERM: 15,
  SIGCONT: 18,
  SIGSTOP: 19,
  SIGTSTP: 20,
  SIGWINCH: 28,
};

const controlSchema = z.discriminatedUnion("type", [
  z.object({ type: z.literal("resize") }).merge(terminalSizeSchema),
  z.object({
    type: z.literal("signal"),
    signal: z.union([
      z.number().int().min(1, "must be 1-64").max(64, "must be 1-64"),
      z
        .string()
        .transform((s) => s.toUpperCase())
        .transform((s) => (s.startsWith("SIG") ? s : `SIG${s}`))
        .refine(
          (s) => s in SIGNALS,
          `must be a signal number or one of ${Object.keys(SIGNALS).join(", ")}`,
        ),
    ]),
  }),
  z.object({ type: z.literal("eof") }),
]);

/** Outgoing bytes buffered in the socket before output is no longer pulled from the guest. */
const SEND_HIGH_WATER_BYTES = 1024 * 1024;

/** WebSocket close codes: normal end, a client mistake, a server-side failure. */
const CLOSE_NORMAL = 1000;
const CLOSE_POLICY = 1008;
const CLOSE_ERROR = 1011;

function parseJson(data: RawData): unknown {
  try {
    return JSON.parse(asBuffer(data).toString("utf8"));
  } catch (err) {
    throw new MsbError(
      "PARSE_ERROR",
      `A text frame is not valid JSON (${(err as Error).message}). Send control messages as JSON text frames and stdin as binary frames.`,
    );
  }
}

function asBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/** A control message (text frame after `start`) as a session input. */
export function parseControl(value: unknown): AttachInput {
  const msg = parseParams(controlSchema, value);
  switch (msg.type) {
    case "resize":
      return { type: "resize", rows: msg.rows, cols: msg.cols };
    case "signal":
      return {
        type: "signal",
        signal: typeof msg.signal === "number" ? msg.signal : SIGNALS[msg.signal]!,
      };
    case "eof":
      return { type: "eof" };
  }
}

/**
 * One attach session on an upgraded socket: the first frame is the JSON `start`, then binary
 * frames are stdin and JSON frames are resize / signal / eof; the server answers `started`,
 * binary output (first byte: 1 stdout, 2 stderr) and, last, `exit` — or one `error` frame.
 * Flow control: the socket is paused while an input is on its way to the guest, and guest
 * output is not pulled while the client has more than 1 MiB unread. Closing the socket ends
 * the session and kills the process group in the guest.
 */
export function runAttachSession(
  socket: WebSocket,
  caller: Caller,
  sandboxes: SandboxService,
  log: FastifyBaseLogger,
  requestId: string,
): void {
  const controller = new AbortController();
  let session: AttachSession | undefined;
  let done = false;
  let queue = Promise.resolve();

  const sendJson = (value: object): void => {
    if (socket.readyState === socket.OPEN) socket.send(JSON.stringify(value));
  };
  const fail = (thrown: unknown): void => {
    if (done) return;
    done = true;
    const err = toMsbError(thrown, requestId);
    if (err.code === "INTERNAL") log.error({ err: thrown, requestId }, "attach failed");
    else log.info({ code: err.code, msg: err.message }, "attach ended with an error");
    sendJson({ type: "error", error: toJsonRpcError(err) });
    socket.close(err.isClientError ? CLOSE_POLICY : CLOSE_ERROR, err.code);
    controller.abort(err);
  };

  socket.on("close", () => {
    done = true;
    controller.abort(new MsbError("CANCELLED", "The attach client went away."));
  });

  const pumpOutput = async (s: AttachSession): Promise<void> => {
    for await (const event of s.events) {
      if (done) return;
      switch (event.type) {
        case "started":
          sendJson({ type: "started", pid: event.pid });
          break;
        case "output": {
          const frame = Buffer.allocUnsafe(event.data.length + 1);
          frame[0] = STREAM_TAG[event.stream];
          frame.set(event.data, 1);
          if (socket.bufferedAmount > SEND_HIGH_WATER_BYTES) {
            await new Promise<void>((resolve) => socket.send(frame, () => resolve()));
          } else {
            socket.send(frame);
          }
          break;
        }
        case "exit":
          sendJson({
            type: "exit",
            exit_code: event.exitCode,
            signal: event.signal,
            duration_ms: event.durationMs,
          });
          done = true;
          socket.close(CLOSE_NORMAL, "exited");
          return;
      }
    }
    if (!done) {
      throw new MsbError(
        "AGENT_DISCONNECTED",
        "The session ended without an exit status (the guest agent went away). Check the sandbox with sandbox.metrics.get; restart it if it stopped.",
      );
    }
  };

  const handle = async (data: RawData, isBinary: boolean): Promise<void> => {
    if (done) return;
    if (session === undefined) {
      if (isBinary) {
        throw new MsbError(
          "INVALID_REQUEST",
          'The first frame must be the JSON start message, e.g. {"type":"start","sandbox":"app","pty":{"rows":24,"cols":80}}.',
        );
      }
      const value = parseJson(data);
      const type = (value as { type?: unknown } | null)?.type;
      if (type !== "start") {
        throw new MsbError(
          "INVALID_REQUEST",
          `The first frame must be {"type":"start",…}, not type ${JSON.stringify(type ?? null)}.`,
        );
      }
      const params = parseParams(attachParamsSchema, value);
      session = sandboxes.attach(caller, params, controller.signal);
      pumpOutput(session).catch(fail);
      return;
    }
    const input: AttachInput = isBinary
      ? { type: "stdin", data: asBuffer(data) }
      : parseControl(parseJson(data));
    socket.pause();
    try {
      await session.send(input);
    } finally {
      socket.resume();
    }
  };

  socket.on("message", (data, isBinary) => {
    queue = queue.then(() => handle(data, isBinary)).catch(fail);
  });
}
