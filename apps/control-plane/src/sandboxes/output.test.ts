import { describe, expect, it } from "vitest";
import { OutputCollector } from "./output.js";

const bytes = (s: string) => Buffer.from(s);

describe("OutputCollector", () => {
  it("splits chunks into lines per stream, in order, without newlines", () => {
    const c = new OutputCollector(1024);
    c.push("stdout", bytes("Hel"));
    c.push("stdout", bytes("lo\r\nWor"));
    c.push("stderr", bytes("oops\n"));
    c.push("stdout", bytes("ld"));
    expect(c.finish()).toEqual({
      output: [
        { stream: "stdout", text: "Hello" },
        { stream: "stderr", text: "oops" },
        { stream: "stdout", text: "World" },
      ],
      truncated: false,
    });
  });

  it("decodes a UTF-8 character split across chunks", () => {
    const c = new OutputCollector(1024);
    const euro = bytes("€\n");
    c.push("stdout", euro.subarray(0, 1));
    c.push("stdout", euro.subarray(1));
    expect(c.finish().output).toEqual([{ stream: "stdout", text: "€" }]);
  });

  it("keeps at most the cap and reports truncation", () => {
    const c = new OutputCollector(10);
    c.push("stdout", bytes("1234\n5678\nabcdef\n"));
    const { output, truncated } = c.finish();
    expect(truncated).toBe(true);
    expect(output).toEqual([
      { stream: "stdout", text: "1234" },
      { stream: "stdout", text: "5678" },
    ]);
  });

  it("cuts a line that never ends", () => {
    const c = new OutputCollector(8);
    c.push("stdout", bytes("x".repeat(100)));
    expect(c.finish()).toEqual({
      output: [{ stream: "stdout", text: "xxxxxxx" }],
      truncated: true,
    });
  });
});
