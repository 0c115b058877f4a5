import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { MsbError } from "@msb/errors";
import { freePort } from "./net.js";
import { terminate } from "./terminate.js";
import { tempDir } from "./temp-dir.js";

/** The built CLI (`apps/msb/dist/main.js`), from `libs/testing/{src,dist}/`. */
export const MSB_CLI = fileURLToPath(new URL("../../../apps/msb/dist/main.js", import.meta.url));

export interface StartMsbServerOptions {
  /** Extra environment for the server and the services it supervises (e.g. `MSB_POOL_SIZE`). */
  readonly env?: Readonly<Record<string, string>>;
  /** How long the server may take to answer health (first run builds images). Default 600 s. */
  readonly readyTimeoutMs?: number;
  /** Prefix of the temporary MSB_HOME. */
  readonly homePrefix?: string;
}

/** A foreground `msb server start --dev` with its own temporary MSB_HOME. */
export interface MsbServer {
  readonly url: string;
  /** The temporary MSB_HOME (removed by `stop`). */
  readonly home: string;
  readonly pid: number;
  /** The last 4 KiB of the server's output, for error messages. */
  log(): string;
  /** SIGTERM (SIGKILL after 60 s), waits for the exit, removes the home. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts `msb server start --dev --port P` the way a user does, on a free port with a fresh
 * MSB_HOME (images come from the build cache in seconds), and resolves once `/api/v1/health`
 * answers 200. Throws SERVICE_UNAVAILABLE with the server's own output when it exits early
 * (`details.exited`: the server cannot run here) or never gets healthy.
 */
export async function startMsbServer(options: StartMsbServerOptions = {}): Promise<MsbServer> {
  if (!existsSync(MSB_CLI)) {
    throw new MsbError(
      "SERVICE_UNAVAILABLE",
      `The msb CLI is not built (${MSB_CLI}); run \`npx tsc -b tsconfig.json\` first.`,
    );
  }
  const home = await tempDir(options.homePrefix ?? "msb-server-");
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const child = spawn(
    process.execPath,
    [MSB_CLI, "--home", home.path, "server", "start", "--dev", "--port", String(port)],
    {
      env: { ...process.env, ...options.env, MSB_HOME: home.path },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  let output = "";
  const keep = (chunk: Buffer) => {
    output = (output + chunk.toString()).slice(-4096);
  };
  child.stdout.on("data", keep);
  child.stderr.on("data", keep);
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const gone = () => child.exitCode !== null || child.signalCode !== null;

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      await terminate(child, exited, 60_000);
      await home.remove();
    })();
    return stopping;
  };

  const deadline = Date.now() + (options.readyTimeoutMs ?? 600_000);
  for (;;) {
    if (gone()) {
      await stop();
      throw new MsbError(
        "SERVICE_UNAVAILABLE",
        `msb server start exited before it was healthy:\n${output}`,
        { details: { exited: true } },
      );
    }
    try {
      const res = await fetch(`${url}/api/v1/health`, { signal: AbortSignal.timeout(5_000) });
      if (res.ok) break;
    } catch {
      // Not listening yet.
    }
    if (Date.now() > deadline) {
      await stop();
      throw new MsbError(
        "SERVICE_UNAVAILABLE",
        `msb server at ${url} was not healthy within ${options.readyTimeoutMs ?? 600_000} ms:\n${output}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
  return { url, home: home.path, pid: child.pid ?? 0, log: () => output, stop };
}
