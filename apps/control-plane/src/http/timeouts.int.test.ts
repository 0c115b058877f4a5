import { connect } from "node:net";
import { afterEach, describe, expect, it } from "vitest";
import { codeResult, out } from "../test-support/fakes.js";
import { createHarness, type Harness } from "../test-support/harness.js";

/** Sends `head` (and then nothing) on a raw connection; resolves with what the server sent before it closed. */
function stall(port: number, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, "127.0.0.1", () => socket.write(head));
    let got = "";
    socket.on("data", (d: Buffer) => (got += d.toString()));
    socket.on("error", reject);
    socket.on("close", () => resolve(got));
  });
}

describe("HTTP timeouts (slow clients)", () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  it("closes connections with a stalled body or stalled headers, while a streamed run outlives those timeouts", async () => {
    h = await createHarness({
      dev: true,
      env: { MSB_HTTP_REQUEST_TIMEOUT_MS: "1000", MSB_HTTP_HEADERS_TIMEOUT_MS: "1000" },
    });
    await h.rpc("sandbox.start", { sandbox: "sb", config: { image: "microsandbox/python" } });
    const address = await h.app.listen({ host: "127.0.0.1", port: 0 });
    const port = Number(new URL(address).port);

    // A streamed run that is still going when the slow clients are cut off.
    let release!: () => void;
    h.vmm.runGate = new Promise<void>((resolve) => (release = resolve));
    h.vmm.runScript = () => [out("stdout", "late\n"), codeResult("success")];
    const streamed = fetch(`${address}/api/v1/rpc`, {
      method: "POST",
      headers: { "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify({
        jsonrpc: "2.0",
        id: 1,
        method: "sandbox.repl.run",
        params: { sandbox: "sb", language: "python", code: "x" },
      }),
    });

    const body = await stall(
      port,
      "POST /api/v1/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    );
    expect(body).toMatch(/^HTTP\/1\.1 408/);
    const headers = await stall(port, "POST /api/v1/rpc HTTP/1.1\r\nHost: 127.0.0.1\r\n");
    expect(headers).toMatch(/^HTTP\/1\.1 408/);

    release();
    const res = await streamed;
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain("event: output");
    expect(text).toMatch(/"status":"success"/);
  });
});
