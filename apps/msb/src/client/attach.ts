import { ERROR_CODES, ERROR_CODE_INFO, MsbError, isErrorCode, msbErrorFromWire } from "@msb/errors";
import { WebSocket, type RawData } from "ws";
import type { ServerTarget } from "../project/remote.js";

/** The route of interactive sessions (docs/api.md, "Interactive sessions"). */
export const ATTACH_PATH = "/api/v1/sandboxes/attach";

/** The `start` message: what to run, and a pty size for a terminal session. */
export interface AttachStart {
  readonly sandbox: string;
  readonly namespace: string;
  readonly command: string;
  readonly args: readonly string[];
  readonly env?: readonly string[];
  readonly workdir?: string;
  readonly pty?: { readonly rows: number; readonly cols: number };
}

export interface AttachExit {
  readonly exitCode: number;
  readonly signal: number;
}

/** Where the session's output goes; writes that report a full buffer pause the socket. */
export interface AttachSinks {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}

/** An open session. Every method is a no-op once it ended. */
export interface AttachConnection {
  /** Resolves when the process runs in the guest. */
  readonly started: Promise<void>;
  /** Resolves with the exit; rejects with the server's typed error. */
  readonly done: Promise<AttachExit>;
  /** Sends stdin bytes; resolves once the socket took them (back-pressure for pipes). */
  write(data: Uint8Array): Promise<void>;
  resize(rows: number, cols: number): void;
  /** A signal name (`SIGINT`) for the process group. */
  signal(name: string): void;
  /** End of stdin (pipe mode). */
  eof(): void;
  /** Ends the session; the server kills the process. */
  close(): void;
}

/** Above this many unsent bytes, `write` waits for the socket to flush. */
const SEND_HIGH_WATER_BYTES = 256 * 1024;

function wireError(body: unknown, fallback: string): MsbError | undefined {
  const error = (body as { error?: { code?: unknown; message?: unknown; data?: unknown } } | null)
    ?.error;
  if (error === undefined || error === null) return undefined;
  const data = error.data as { code?: unknown } | null | undefined;
  const code = isErrorCode(data?.code)
    ? data.code
    : ERROR_CODES.find((c) => ERROR_CODE_INFO[c].jsonRpc === error.code);
  return msbErrorFromWire(code, typeof error.message === "string" ? error.message : fallback, data);
}

/**
 * Opens `GET /api/v1/sandboxes/attach` as a WebSocket and sends `start`. Output frames go to
 * the sinks as they arrive; control frames settle `started` and `done`. A refusal before the
 * upgrade (bad key) and an error frame after it both reject `done` with the server's code.
 */
export function openAttach(
  target: ServerTarget,
  start: AttachStart,
  sinks: AttachSinks,
): AttachConnection {
  const url = `${target.url.replace(/^http/, "ws")}${ATTACH_PATH}`;
  const headers: Record<string, string> = {};
  if (target.apiKey !== undefined) headers["authorization"] = `Bearer ${target.apiKey}`;
  const ws = new WebSocket(url, { headers, perMessageDeflate: false });

  let settled = false;
  let resolveStarted!: () => void;
  const started = new Promise<void>((r) => (resolveStarted = r));
  let resolveDone!: (exit: AttachExit) => void;
  let rejectDone!: (err: MsbError) => void;
  const done = new Promise<AttachExit>((res, rej) => {
    resolveDone = res;
    rejectDone = rej;
  });
  const finish = (outcome: AttachExit | MsbError): void => {
    if (settled) return;
    settled = true;
    if (outcome instanceof MsbError) rejectDone(outcome);
    else resolveDone(outcome);
    // Queued input is dropped; its writers are released.
    for (const fn of queued.splice(0)) fn();
    if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.close(1000);
  };

  // Input that comes before the socket is open (a pipe's whole content and its end, often)
  // waits here and follows the start message in order.
  const queued: (() => void)[] = [];
  const whenOpen = (fn: () => void): void => {
    if (ws.readyState === ws.CONNECTING && !settled) queued.push(fn);
    else fn();
  };
  ws.on("open", () => {
    ws.send(JSON.stringify({ type: "start", ...start }));
    for (const fn of queued.splice(0)) fn();
  });
  ws.on("message", (data: RawData, isBinary: boolean) => {
    const buf = Buffer.isBuffer(data)
      ? data
      : Array.isArray(data)
        ? Buffer.concat(data)
        : Buffer.from(data);
    if (isBinary) {
      const sink = buf[0] === 2 ? sinks.stderr : sinks.stdout;
      if (!sink.write(buf.subarray(1))) {
        // The terminal (or pipe) is slower than the guest: stop reading until it drains.
        ws.pause();
        sink.once("drain", () => ws.resume());
      }
      return;
    }
    let msg: { type?: unknown; exit_code?: unknown; signal?: unknown };
    try {
      msg = JSON.parse(buf.toString("utf8")) as typeof msg;
    } catch {
      return;
    }
    if (msg.type === "started") resolveStarted();
    else if (msg.type === "exit") {
      finish({
        exitCode: typeof msg.exit_code === "number" ? msg.exit_code : 1,
        signal: typeof msg.signal === "number" ? msg.signal : 0,
      });
    } else if (msg.type === "error") {
      finish(
        wireError(msg, "the session failed") ??
          new MsbError("INTERNAL", "The server ended the session with an unreadable error."),
      );
    }
  });
  ws.on("unexpected-response", (_req, res) => {
    let body = "";
    res.on("data", (c: Buffer) => (body += c.toString("utf8")));
    res.on("end", () => {
      let parsed: unknown;
      try {
        parsed = JSON.parse(body);
      } catch {
        parsed = undefined;
      }
      finish(
        wireError(parsed, `HTTP ${res.statusCode}`) ??
          new MsbError(
            "SERVICE_UNAVAILABLE",
            `msb server at ${target.url} refused the interactive session with HTTP ${res.statusCode ?? "?"}; it may be older than this CLI. Next step: \`msb server status\`, or use \`msb run NAME --exec CMD\`.`,
            { details: { url: target.url, status: res.statusCode } },
          ),
      );
      ws.terminate();
    });
  });
  ws.on("error", (err: Error & { code?: string }) => {
    finish(
      new MsbError(
        "SERVER_NOT_RUNNING",
        `msb server is not running at ${target.url} (or the connection broke: ${err.code ?? err.message}); start it with \`msb server start --dev\`.`,
        { cause: err, details: { url: target.url } },
      ),
    );
  });
  ws.on("close", (code) => {
    finish(
      new MsbError(
        "SERVICE_UNAVAILABLE",
        `The connection to ${target.url} closed (code ${code}) before the process exited. Next step: \`msb server log --service control-plane\`; the process in the sandbox was stopped.`,
        { details: { url: target.url, closeCode: code } },
      ),
    );
  });

  const sendControl = (value: object): void =>
    whenOpen(() => {
      if (!settled && ws.readyState === ws.OPEN) ws.send(JSON.stringify(value));
    });
  return {
    started,
    done,
    write: (data) =>
      new Promise<void>((resolve) =>
        whenOpen(() => {
          if (settled || ws.readyState !== ws.OPEN) resolve();
          else if (ws.bufferedAmount + data.length <= SEND_HIGH_WATER_BYTES) {
            ws.send(data, { binary: true });
            resolve();
          } else {
            // Wait until these bytes reached the socket before taking more input.
            ws.send(data, { binary: true }, () => resolve());
          }
        }),
      ),
    resize: (rows, cols) => sendControl({ type: "resize", rows, cols }),
    signal: (name) => sendControl({ type: "signal", signal: name }),
    eof: () => sendControl({ type: "eof" }),
    close: () => {
      if (!settled) {
        settled = true;
        rejectDone(new MsbError("CANCELLED", "The session was closed."));
      }
      ws.close(1000);
    },
  };
}
