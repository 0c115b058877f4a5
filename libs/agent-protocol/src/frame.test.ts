import { randomBytes } from "node:crypto";
import { MsbError } from "@msb/errors";
import { describe, expect, it } from "vitest";
import { FrameDecoder, FrameKind, MAX_FRAME_BYTES, encodeFrame, type Frame } from "./frame.js";

function decodeAll(bytes: Buffer, chunk: number): Frame[] {
  const d = new FrameDecoder({ from: "guest" });
  const out: Frame[] = [];
  for (let i = 0; i < bytes.length; i += chunk) out.push(...d.push(bytes.subarray(i, i + chunk)));
  return out;
}

describe("frame codec", () => {
  it("round-trips frames whatever the chunking", () => {
    const small = [
      encodeFrame(FrameKind.HELLO, 0, '{"protocol":1}'),
      encodeFrame(FrameKind.STDOUT, 7, Buffer.from("hello")),
      encodeFrame(FrameKind.EXIT, 0xffff_ffff, "{}"),
      encodeFrame(FrameKind.STDERR, 3, Buffer.alloc(0)),
    ];
    const expected = [
      [FrameKind.HELLO, 0, 14],
      [FrameKind.STDOUT, 7, 5],
      [FrameKind.EXIT, 0xffff_ffff, 2],
      [FrameKind.STDERR, 3, 0],
    ];
    for (const chunk of [1, 3, 9, 4096]) {
      const got = decodeAll(Buffer.concat(small), chunk);
      expect(got.map((f) => [f.kind, f.stream, f.payload.length])).toEqual(expected);
      expect(got[1]!.payload.toString()).toBe("hello");
    }
    const max = randomBytes(MAX_FRAME_BYTES - 5);
    for (const chunk of [4093, 65_536, MAX_FRAME_BYTES + 4]) {
      const got = decodeAll(
        Buffer.concat([...small, encodeFrame(FrameKind.CTRL_OUT, 2, max)]),
        chunk,
      );
      expect(got).toHaveLength(5);
      expect(got[4]!.payload.equals(max)).toBe(true);
    }
  });

  it("refuses to encode an oversize frame", () => {
    expect(() => encodeFrame(FrameKind.STDIN, 1, Buffer.alloc(MAX_FRAME_BYTES - 4))).toThrowError(
      MsbError,
    );
  });

  it("rejects an oversize length before buffering its body", () => {
    const d = new FrameDecoder();
    const head = Buffer.alloc(9);
    head.writeUInt32BE(MAX_FRAME_BYTES + 1, 0);
    head.writeUInt8(FrameKind.STDOUT, 4);
    expect(() => d.push(head)).toThrowError(/outside 5\.\./);
    expect(d.bufferedBytes).toBe(0);
    // stays failed: framing is lost
    expect(() => d.push(encodeFrame(FrameKind.STDOUT, 1, "x"))).toThrowError(MsbError);
  });

  it("rejects kinds the sender may not send", () => {
    expect(() =>
      new FrameDecoder({ from: "guest" }).push(encodeFrame(FrameKind.REQUEST, 1, "{}")),
    ).toThrowError(/kind 2/);
    expect(() =>
      new FrameDecoder({ from: "host" }).push(encodeFrame(FrameKind.EXIT, 1, "{}")),
    ).toThrowError(/kind 8/);
    expect(
      new FrameDecoder({ from: "host" }).push(encodeFrame(FrameKind.REQUEST, 1, "{}")),
    ).toHaveLength(1);
  });

  it("holds a truncated frame without emitting it", () => {
    const f = encodeFrame(FrameKind.STDOUT, 1, "abcdef");
    const d = new FrameDecoder();
    expect(d.push(f.subarray(0, f.length - 1))).toEqual([]);
    expect(d.bufferedBytes).toBe(f.length - 1);
    expect(d.push(f.subarray(f.length - 1))).toHaveLength(1);
  });

  it("fuzz: random bytes only ever yield frames or the typed protocol error", () => {
    for (let i = 0; i < 2000; i++) {
      const d = new FrameDecoder();
      const bytes = randomBytes(1 + (i % 200));
      // make some inputs start with a plausible length so bodies get parsed too
      if (i % 3 === 0 && bytes.length >= 9) {
        bytes.writeUInt32BE(5 + (bytes[8]! % 64), 0);
        bytes[4] = 1 + (bytes[4]! % 12);
      }
      try {
        for (let off = 0; off < bytes.length; off += 7) {
          for (const f of d.push(bytes.subarray(off, off + 7))) {
            expect(f.payload.length).toBeLessThanOrEqual(MAX_FRAME_BYTES - 5);
          }
        }
      } catch (err) {
        expect(err).toBeInstanceOf(MsbError);
        expect((err as MsbError).code).toBe("AGENT_PROTOCOL_ERROR");
      }
      expect(d.bufferedBytes).toBeLessThanOrEqual(MAX_FRAME_BYTES + 4);
    }
  });
});
