import type { FastifyReply, FastifyRequest } from "fastify";
import type { ProgressObserver } from "../../images/service.js";
import type { RunObserver } from "../../sandboxes/service.js";
import type { JsonRpcResponse } from "./envelope.js";

/** Comment line sent while a run is quiet, so proxies do not cut long cells. */
const PING_MS = 15_000;

/**
 * A server-sent-event answer for one streamed call (docs/streaming.md). Nothing is written
 * until the run starts (or, for image.pull/build/push, until the first progress event): every
 * error found before (params, auth, sandbox lookup) is still an ordinary JSON answer. Once
 * open: `output` (or `progress`) events, `: ping` comments, one `result` event holding the
 * complete JSON-RPC response, then the end of the response.
 */
export interface SseAnswer {
  readonly observer: RunObserver;
  readonly progress: ProgressObserver;
  /** Whether the stream was opened (then `finish` must be used instead of a JSON reply). */
  readonly opened: boolean;
  finish(response: JsonRpcResponse): void;
}

export function createSseAnswer(request: FastifyRequest, reply: FastifyReply): SseAnswer {
  let opened = false;
  let ping: NodeJS.Timeout | undefined;
  const raw = reply.raw;
  const write = (chunk: string) => {
    if (!raw.writableEnded && !raw.destroyed) raw.write(chunk);
  };
  const event = (name: string, data: unknown) => {
    write(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);
  };
  const open = () => {
    if (opened) return;
    opened = true;
    reply.hijack();
    raw.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      "x-accel-buffering": "no",
      "x-request-id": request.id,
    });
    raw.flushHeaders();
    ping = setInterval(() => write(": ping\n\n"), PING_MS);
    ping.unref();
    raw.once("close", () => clearInterval(ping));
  };
  return {
    observer: {
      onStart: open,
      onOutput(stream, text) {
        open();
        event("output", { stream, text });
      },
    },
    progress(p) {
      open();
      event("progress", p);
    },
    get opened() {
      return opened;
    },
    finish(response) {
      clearInterval(ping);
      event("result", response);
      if (!raw.writableEnded) raw.end();
    },
  };
}

/** True when the client named `text/event-stream` in Accept (`*\/*` does not count). */
export function wantsEventStream(accept: string | undefined): boolean {
  return (accept ?? "")
    .split(",")
    .some((part) => part.split(";")[0]?.trim().toLowerCase() === "text/event-stream");
}
