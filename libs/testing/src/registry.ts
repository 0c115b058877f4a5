import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, openSync } from "node:fs";
import { access, mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { freePort, waitFor } from "./net.js";
import { tempDir } from "./temp-dir.js";
import { terminate } from "./terminate.js";

/** A running OCI registry (Debian's `docker-registry`, i.e. distribution 2.8) on loopback. */
export interface TestRegistry {
  /** `127.0.0.1:PORT`: the registry part of image references. */
  readonly host: string;
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  /** Where the registry keeps its blobs (`docker/registry/v2/...`); tests may tamper with it. */
  readonly storageDir: string;
  /** Path of the registry's on-disk copy of a blob ("sha256:…"), for corrupting it in tests. */
  blobDataPath(digest: string): string;
  /** Stops the registry and deletes its storage. Idempotent. */
  stop(): Promise<void>;
}

export interface StartRegistryOptions {
  /** Default `/usr/bin/docker-registry` (Debian package `docker-registry`). */
  readonly binary?: string;
  /** Readiness deadline. Default 30 s (the machine may be busy). */
  readonly timeoutMs?: number;
}

/**
 * Starts a private registry on a free loopback port with storage in a temp dir and deletes
 * enabled. Its log goes to `<storage>/registry.log`. Throws when the binary is missing.
 */
export async function startRegistry(options: StartRegistryOptions = {}): Promise<TestRegistry> {
  const binary = options.binary ?? "/usr/bin/docker-registry";
  await access(binary).catch(() => {
    throw new Error(`${binary} is missing: install the Debian package docker-registry`);
  });
  const dir = await tempDir("msb-registry-");
  const storageDir = join(dir.path, "storage");
  await mkdir(storageDir);
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const configPath = join(dir.path, "config.yml");
  await writeFile(
    configPath,
    [
      "version: 0.1",
      "log:",
      "  level: warn",
      "  accesslog:",
      "    disabled: true",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${storageDir}`,
      "  delete:",
      "    enabled: true",
      "  maintenance:",
      "    uploadpurging:",
      "      enabled: false",
      "http:",
      `  addr: ${host}`,
      "  secret: msb-test-registry",
      "",
    ].join("\n"),
  );
  const logFd = openSync(join(dir.path, "registry.log"), "a");
  const child: ChildProcess = spawn(binary, ["serve", configPath], {
    stdio: ["ignore", logFd, logFd],
  });
  closeSync(logFd);
  let exited = false;
  const exitedPromise = new Promise<void>((resolve) =>
    child.once("exit", () => {
      exited = true;
      resolve();
    }),
  );
  const url = `http://${host}`;
  try {
    await waitFor(
      async () => {
        if (exited) throw new Error(`docker-registry exited; see ${dir.path}/registry.log`);
        const res = await fetch(`${url}/v2/`);
        await res.arrayBuffer();
        return res.status === 200;
      },
      { timeoutMs: options.timeoutMs ?? 30_000, what: `docker-registry on ${host}` },
    );
  } catch (err) {
    child.kill("SIGKILL");
    await exitedPromise;
    await dir.remove();
    throw err;
  }
  let stopped: Promise<void> | undefined;
  return {
    host,
    url,
    storageDir,
    blobDataPath(digest) {
      const hex = digest.replace(/^sha256:/, "");
      return join(storageDir, "docker/registry/v2/blobs/sha256", hex.slice(0, 2), hex, "data");
    },
    stop() {
      stopped ??= (async () => {
        await terminate(child, exitedPromise, 5_000);
        await dir.remove();
      })();
      return stopped;
    },
  };
}
