import { MsbError } from "@msb/errors";

/**
 * Frame kinds of agent protocol v1 (docs/agent-protocol.md). A frame is
 * `u32 BE length | u8 kind | u32 BE stream | payload`, where length counts kind, stream and
 * payload.
 */
export const FrameKind = {
  HELLO: 1,
  REQUEST: 2,
  RESPONSE: 3,
  STDOUT: 4,
  STDERR: 5,
  STDIN: 6,
  STDIN_EOF: 7,
  EXIT: 8,
  CTRL_IN: 9,
  CTRL_OUT: 10,
  WINDOW: 11,
  ERROR: 12,
} as const;
export type FrameKind = (typeof FrameKind)[keyof typeof FrameKind];

/** Protocol version this library speaks. */
export const PROTOCOL_VERSION = 1;
/** Largest value of the length field (kind + stream + payload), both directions: 1 MiB. */
export const MAX_FRAME_BYTES = 1_048_576;
/** Bytes before the payload: length (4), kind (1), stream (4). */
export const FRAME_HEADER_BYTES = 9;
/** Initial flow-control window per stream and direction, unless HELLO says otherwise. */
export const DEFAULT_WINDOW_BYTES = 262_144;

/** Kinds a guest may send; anything else from a guest is a protocol error. */
const GUEST_KINDS: ReadonlySet<number> = new Set([
  FrameKind.HELLO,
  FrameKind.RESPONSE,
  FrameKind.STDOUT,
  FrameKind.STDERR,
  FrameKind.EXIT,
  FrameKind.CTRL_OUT,
  FrameKind.WINDOW,
  FrameKind.ERROR,
]);
/** Kinds a host may send. */
const HOST_KINDS: ReadonlySet<number> = new Set([
  FrameKind.REQUEST,
  FrameKind.STDIN,
  FrameKind.STDIN_EOF,
  FrameKind.CTRL_IN,
  FrameKind.WINDOW,
]);

export interface Frame {
  readonly kind: FrameKind;
  readonly stream: number;
  readonly payload: Buffer;
}

export function protocolError(message: string, details: Record<string, unknown> = {}): MsbError {
  return new MsbError(
    "AGENT_PROTOCOL_ERROR",
    `The guest agent broke the protocol: ${message}. The connection was reset; restart the sandbox if it does not recover.`,
    { details },
  );
}

/** Encodes one frame. Throws AGENT_PROTOCOL_ERROR for an oversize payload or a bad stream id. */
export function encodeFrame(
  kind: FrameKind,
  stream: number,
  payload: Uint8Array | string = Buffer.alloc(0),
  maxFrameBytes: number = MAX_FRAME_BYTES,
): Buffer {
  const body = typeof payload === "string" ? Buffer.from(payload, "utf8") : payload;
  const length = body.length + 5;
  if (length > maxFrameBytes) {
    throw protocolError(`frame of ${length} bytes exceeds the ${maxFrameBytes}-byte cap`, {
      length,
    });
  }
  if (!Number.isInteger(stream) || stream < 0 || stream > 0xffff_ffff) {
    throw protocolError(`stream id ${stream} is not a u32`);
  }
  const out = Buffer.allocUnsafe(FRAME_HEADER_BYTES + body.length);
  out.writeUInt32BE(length, 0);
  out.writeUInt8(kind, 4);
  out.writeUInt32BE(stream, 5);
  out.set(body, FRAME_HEADER_BYTES);
  return out;
}

export interface FrameDecoderOptions {
  /** Which side's frames are decoded: `"guest"` (host reading the agent) or `"host"`. */
  readonly from?: "guest" | "host";
  /** Length-field cap; defaults to MAX_FRAME_BYTES. */
  readonly maxFrameBytes?: number;
}

/**
 * Streaming, bounded frame decoder. Bytes from a guest are hostile: the decoder never buffers
 * more than one frame, rejects lengths outside 5..maxFrameBytes before reading the body, and
 * rejects kinds the sender may not send. After an error it stays failed (framing is lost).
 */
export class FrameDecoder {
  readonly #allowed: ReadonlySet<number>;
  readonly #max: number;
  #chunks: Buffer[] = [];
  #buffered = 0;
  #failed: MsbError | undefined;

  constructor(options: FrameDecoderOptions = {}) {
    this.#allowed = options.from === "host" ? HOST_KINDS : GUEST_KINDS;
    this.#max = options.maxFrameBytes ?? MAX_FRAME_BYTES;
  }

  /** Bytes held for an incomplete frame. */
  get bufferedBytes(): number {
    return this.#buffered;
  }

  /** Feeds bytes and returns the frames they complete. Throws AGENT_PROTOCOL_ERROR. */
  push(chunk: Uint8Array): Frame[] {
    if (this.#failed) throw this.#failed;
    if (chunk.length > 0) {
      this.#chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length));
      this.#buffered += chunk.length;
    }
    const frames: Frame[] = [];
    for (;;) {
      if (this.#buffered < 4) return frames;
      const head = this.#peek(FRAME_HEADER_BYTES);
      const length = head.readUInt32BE(0);
      if (length < 5 || length > this.#max) {
        return this.#fail(`frame length ${length} is outside 5..${this.#max}`, { length });
      }
      if (head.length < FRAME_HEADER_BYTES) return frames;
      const kind = head.readUInt8(4);
      if (!this.#allowed.has(kind))
        return this.#fail(`frame kind ${kind} is not allowed here`, { kind });
      if (this.#buffered < length + 4) return frames;
      const whole = this.#take(length + 4);
      frames.push({
        kind: kind as FrameKind,
        stream: whole.readUInt32BE(5),
        payload: whole.subarray(FRAME_HEADER_BYTES),
      });
    }
  }

  #fail(message: string, details: Record<string, unknown>): never {
    this.#failed = protocolError(message, details);
    this.#chunks = [];
    this.#buffered = 0;
    throw this.#failed;
  }

  #peek(n: number): Buffer {
    const first = this.#chunks[0];
    if (first && first.length >= n) return first.subarray(0, n);
    const all = Buffer.concat(this.#chunks);
    this.#chunks = [all];
    return all.subarray(0, Math.min(n, all.length));
  }

  #take(n: number): Buffer {
    const first = this.#chunks[0];
    let out: Buffer;
    if (first && first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.#chunks.shift();
      else this.#chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.#chunks);
      out = all.subarray(0, n);
      this.#chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.#buffered -= n;
    return out;
  }
}
