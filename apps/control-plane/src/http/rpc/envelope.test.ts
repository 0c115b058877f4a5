import { describe, expect, it } from "vitest";
import { parseEnvelope } from "./envelope.js";

describe("JSON-RPC envelope parsing", () => {
  it("reads a request, keeping its id and params", () => {
    expect(parseEnvelope({ jsonrpc: "2.0", method: "m", params: { a: 1 }, id: "x" }, 10)).toEqual({
      batch: false,
      items: [{ kind: "call", id: "x", notification: false, method: "m", params: { a: 1 } }],
    });
  });

  it("tells a notification (no id member) from a request with id null", () => {
    const [note] = parseEnvelope({ jsonrpc: "2.0", method: "m" }, 10).items;
    const [nullId] = parseEnvelope({ jsonrpc: "2.0", method: "m", id: null }, 10).items;
    expect(note).toMatchObject({ kind: "call", notification: true, id: null });
    expect(nullId).toMatchObject({ kind: "call", notification: false, id: null });
  });

  it.each([
    [{ method: "m", id: 1 }, 1],
    [{ jsonrpc: "2.0", id: 2 }, 2],
    [{ jsonrpc: "2.0", method: "", id: 3 }, 3],
    [{ jsonrpc: "2.0", method: "m", params: "x", id: 4 }, 4],
    [{ jsonrpc: "2.0", method: "m", id: { no: 1 } }, null],
    ["just a string", null],
    [null, null],
  ])("answers %j as invalid with id %j", (body, id) => {
    const [item] = parseEnvelope(body, 10).items;
    expect(item).toMatchObject({ kind: "invalid", id, error: { code: "INVALID_REQUEST" } });
  });

  it("parses each batch element on its own", () => {
    const env = parseEnvelope([{ jsonrpc: "2.0", method: "m", id: 1 }, 5], 10);
    expect(env.batch).toBe(true);
    expect(env.items.map((i) => i.kind)).toEqual(["call", "invalid"]);
  });

  it("refuses an empty or oversized batch as a whole", () => {
    expect(() => parseEnvelope([], 10)).toThrow(/batch is empty/);
    expect(() => parseEnvelope(Array(11).fill({ jsonrpc: "2.0", method: "m" }), 10)).toThrow(
      /at most 10/,
    );
  });
});
