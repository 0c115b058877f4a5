/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment --
   These tests read parsed JSON bodies (`res.json()` is `any`); the matchers check their shape. */
import { MsbError } from "@msb/errors";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { codeResult, out } from "../../test-support/fakes.js";
import { createHarness, type Harness } from "../../test-support/harness.js";

const run = { sandbox: "sb", language: "python", code: "print('Hello World!')" };
const SSE = { accept: "text/event-stream, application/json" };

/** Parses an event-stream body into its events (comments dropped). */
function events(body: string): { event: string; data: unknown }[] {
  return body
    .split("\n\n")
    .filter((block) => block.startsWith("event: "))
    .map((block) => {
      const [eventLine, dataLine] = block.split("\n") as [string, string];
      return { event: eventLine.slice(7), data: JSON.parse(dataLine.slice(6)) as unknown };
    });
}

describe("streamed answers (docs/streaming.md)", () => {
  let h: Harness;
  beforeEach(async () => {
    h = await createHarness({ dev: true });
    await h.rpc("sandbox.start", { sandbox: "sb", config: { image: "microsandbox/python" } });
  });
  afterEach(async () => {
    await h.close();
  });

  it("streams raw chunks as output events, then the whole JSON-RPC response", async () => {
    h.vmm.runScript = () => [
      out("stdout", "Hello "),
      out("stdout", "World!\n"),
      out("stderr", "careful\n"),
      codeResult("success"),
    ];
    const res = await h.rpc("sandbox.repl.run", run, { headers: SSE, id: "s1" });
    expect(res.statusCode).toBe(200);
    expect(res.headers["content-type"]).toBe("text/event-stream; charset=utf-8");
    expect(res.headers["x-request-id"]).toBeDefined();
    expect(events(res.body)).toEqual([
      { event: "output", data: { stream: "stdout", text: "Hello " } },
      { event: "output", data: { stream: "stdout", text: "World!\n" } },
      { event: "output", data: { stream: "stderr", text: "careful\n" } },
      {
        event: "result",
        data: {
          jsonrpc: "2.0",
          id: "s1",
          result: expect.objectContaining({
            status: "success",
            output: [
              { stream: "stdout", text: "Hello World!" },
              { stream: "stderr", text: "careful" },
            ],
          }),
        },
      },
    ]);
  });

  it("sends a failure during the run as the result event", async () => {
    h.vmm.failRunWith = new MsbError("VM_DIED", "The guest panicked.");
    const res = await h.rpc("sandbox.repl.run", run, { headers: SSE });
    expect(res.headers["content-type"]).toMatch(/^text\/event-stream/);
    const last = events(res.body).at(-1)!;
    expect(last).toMatchObject({ event: "result", data: { error: { code: -32004 } } });
  });

  it("answers errors found before the run as plain JSON with their status", async () => {
    const res = await h.rpc("sandbox.repl.run", { ...run, sandbox: "ghost" }, { headers: SSE });
    expect(res.statusCode).toBe(404);
    expect(res.headers["content-type"]).toMatch(/^application\/json/);
    expect(res.json().error.data.code).toBe("SANDBOX_NOT_FOUND");
  });

  it("does not stream without an explicit Accept, nor for other methods", async () => {
    const plain = await h.rpc("sandbox.repl.run", run, { headers: { accept: "*/*" } });
    expect(plain.headers["content-type"]).toMatch(/^application\/json/);
    const metrics = await h.rpc("sandbox.metrics.get", {}, { headers: SSE });
    expect(metrics.headers["content-type"]).toMatch(/^application\/json/);
  });
});
