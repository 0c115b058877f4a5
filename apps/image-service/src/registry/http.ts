import { request as httpRequest, type IncomingHttpHeaders, type IncomingMessage } from "node:http";
import { request as httpsRequest } from "node:https";
import type { Readable } from "node:stream";
import { assertHostAllowed, guardedLookup, type Resolver } from "./address-guard.js";

// The only way the image service speaks HTTP to the outside. Each request is checked by
// address (see address-guard.ts), never pooled (a pooled socket would skip the check), never
// follows redirects on its own, and never hands a body to an error message: callers read
// bodies only of successful answers, with a size cap.

/** One answer: status, headers and the body stream (the caller reads or discards it). */
export interface HttpAnswer {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: IncomingMessage;
  /** The URL this answer came from. */
  readonly url: URL;
}

export interface HttpRequest {
  readonly method: "GET" | "HEAD" | "POST" | "PUT";
  readonly url: URL;
  readonly headers?: Readonly<Record<string, string>>;
  readonly body?: Buffer | Readable;
  readonly signal?: AbortSignal;
  /** May the host resolve to loopback/private addresses (it was listed by name)? */
  readonly allowNonPublic: boolean;
}

export interface HttpOptions {
  /** Idle time on a socket (connect, headers, between body chunks). Default 60 s. */
  readonly idleTimeoutMs?: number;
  /** Test seam: DNS. */
  readonly resolver?: Resolver;
}

/** A request's socket failed, timed out, or the peer did not speak HTTP. */
export class TransportError extends Error {
  override readonly name = "TransportError";
}

/** Sends one request; rejects with ForbiddenAddressError, TransportError or an abort reason. */
export function sendHttp(req: HttpRequest, options: HttpOptions = {}): Promise<HttpAnswer> {
  const { url } = req;
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    return Promise.reject(new TransportError(`unsupported URL scheme ${url.protocol}`));
  }
  try {
    assertHostAllowed(url, req.allowNonPublic);
  } catch (err) {
    return Promise.reject(err instanceof Error ? err : new Error(String(err)));
  }
  if (req.signal?.aborted === true) return Promise.reject(req.signal.reason as Error);
  const send = url.protocol === "https:" ? httpsRequest : httpRequest;
  return new Promise<HttpAnswer>((resolve, reject) => {
    const outgoing = send(url, {
      method: req.method,
      headers: { "user-agent": "msb-image-service", ...req.headers },
      agent: false,
      lookup: guardedLookup(req.allowNonPublic, options.resolver),
      timeout: options.idleTimeoutMs ?? 60_000,
      ...(req.signal ? { signal: req.signal } : {}),
    });
    outgoing.once("timeout", () =>
      outgoing.destroy(new TransportError("the connection timed out")),
    );
    outgoing.once("error", (err: Error & { code?: string }) => {
      if (req.signal?.aborted === true) return reject(req.signal.reason as Error);
      if (err.code === "EMSB_FORBIDDEN_ADDRESS") return reject(err);
      reject(new TransportError(err.code ?? err.message, { cause: err }));
    });
    outgoing.once("response", (res) => {
      res.once("error", () => undefined);
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res, url });
    });
    if (req.body === undefined) outgoing.end();
    else if (Buffer.isBuffer(req.body)) outgoing.end(req.body);
    else req.body.pipe(outgoing);
  });
}

/** Throws away an answer's body without reading it into memory. */
export function discard(answer: HttpAnswer): void {
  answer.body.resume();
  answer.body.once("end", () => answer.body.destroy());
}

/** Reads a successful answer's body, at most `maxBytes` (else TransportError). */
export async function readBody(answer: HttpAnswer, maxBytes: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of answer.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > maxBytes) {
        answer.body.destroy();
        throw new TransportError(`the answer is larger than ${maxBytes} bytes`);
      }
      chunks.push(chunk);
    }
  } catch (err) {
    if (err instanceof TransportError) throw err;
    throw new TransportError("the answer was cut off", { cause: err });
  }
  return Buffer.concat(chunks);
}

/** The header as one string (the first when repeated). */
export function header(answer: HttpAnswer, name: string): string | undefined {
  const value = answer.headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}
