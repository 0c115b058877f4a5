import { fileURLToPath } from "node:url";
import { existsSync } from "node:fs";
import { MsbError } from "@msb/errors";
import { MSB_CLI, startMsbServer } from "@msb/testing";

/** Repository root, for running the built CLI, the Python SDK and the examples. */
export const REPO_ROOT = fileURLToPath(new URL("../../../", import.meta.url));

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

/**
 * The server under test: MSB_TEST_SERVER_URL when the harness set it, otherwise a dev server
 * started the way a user starts one (`startMsbServer` of @msb/testing: `msb server start --dev
 * --port P` with a temporary MSB_HOME). Returns a skip reason only when no server can be had
 * (CLI not built, or it exits before it is ready); the reason quotes the server's own error.
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
  if (!existsSync(MSB_CLI)) {
    return { skip: `no msb server: MSB_TEST_SERVER_URL is not set and ${MSB_CLI} is not built` };
  }
  try {
    const server = await startMsbServer({ readyTimeoutMs, homePrefix: "msb-e2e-sdk-" });
    return { server: { url: server.url, apiKey: undefined, stop: () => server.stop() } };
  } catch (err) {
    if (err instanceof MsbError && err.details["exited"] === true) return { skip: err.message };
    throw err;
  }
}
