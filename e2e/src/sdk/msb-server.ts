import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";

/** Repository root, for running the built CLI, the Python SDK and the examples. */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));
const MSB = join(REPO_ROOT, "apps", "msb", "dist", "main.js");

/** A server the SDK tests talk to. */
export interface TestServer {
  readonly url: string;
  /** Only for a server given by MSB_TEST_SERVER_URL that requires keys (MSB_TEST_API_KEY). */
  readonly apiKey: string | undefined;
  stop(): Promise<void>;
}

export type TestServerOrSkip =
  | { readonly server: TestServer; readonly skip?: undefined }
  | { readonly server?: undefined; readonly skip: string };

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const address = s.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/**
 * The server under test: MSB_TEST_SERVER_URL when the harness set it, otherwise a dev server
 * started the way a user starts one (`msb server start --dev --port P`) with a temporary
 * MSB_HOME. Returns a skip reason only when no server can be had (CLI not built, or it exits
 * before it is ready); the reason quotes the server's own error.
 */
export async function startTestServer(readyTimeoutMs = 600_000): Promise<TestServerOrSkip> {
  const given = process.env["MSB_TEST_SERVER_URL"];
  if (given !== undefined && given !== "") {
    return {
      server: {
        url: given.replace(/\/+$/, ""),
        apiKey: process.env["MSB_TEST_API_KEY"],
        stop: () => Promise.resolve(),
      },
    };
  }
  if (!existsSync(MSB)) {
    return { skip: `no msb server: MSB_TEST_SERVER_URL is not set and ${MSB} is not built` };
  }
  const home = mkdtempSync(join(tmpdir(), "msb-e2e-sdk-"));
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child: ChildProcess = spawn(
    process.execPath,
    [MSB, "server", "start", "--dev", "--port", String(port)],
    { env: { ...process.env, MSB_HOME: home }, stdio: ["ignore", "pipe", "pipe"] },
  );
  let log = "";
  child.stdout?.on("data", (c: Buffer) => (log += c.toString()));
  child.stderr?.on("data", (c: Buffer) => (log += c.toString()));
  const exited = new Promise<number | null>((resolve) => child.once("exit", resolve));

  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
      await exited;
      clearTimeout(timer);
    }
    rmSync(home, { recursive: true, force: true });
  };

  const deadline = Date.now() + readyTimeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      await stop();
      return { skip: `msb server start exited before it was ready:\n${log.slice(-2000)}` };
    }
    try {
      const res = await fetch(`${url}/api/v1/health`, { signal: AbortSignal.timeout(2_000) });
      if (res.ok) return { server: { url, apiKey: undefined, stop } };
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `msb server at ${url} not healthy within ${readyTimeoutMs} ms:\n${log.slice(-2000)}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}
