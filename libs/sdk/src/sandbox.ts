/// <reference lib="esnext.disposable" preserve="true" />
import { randomUUID } from "node:crypto";
import {
  CONTROL_TIMEOUT_SECONDS,
  clientTimeoutMs,
  outputDispatcher,
  type OutputHandlers,
  type SandboxChannel,
} from "./channel.js";
import { Command } from "./command.js";
import { MicrosandboxError, SandboxNotFoundError, TimeoutError } from "./errors.js";
import { Execution, replayChunks } from "./execution.js";
import { Files } from "./files.js";
import { Metrics } from "./metrics.js";
import { RpcClient } from "./rpc.js";

/** Used when neither `serverUrl` nor `MSB_SERVER_URL` is set. */
export const DEFAULT_SERVER_URL = "http://127.0.0.1:5555";
/**
 * Seconds the client waits for `start` when no timeout is given: the server's own deadlines
 * (image pull up to 30 min on first use, then boot) decide; this only catches a hung server.
 */
export const DEFAULT_START_WAIT_SECONDS = 35 * 60;

/** How the sandbox is configured when it starts (`config` of `sandbox.start`). */
export interface StartOptions {
  /** Default: `microsandbox/python` or `microsandbox/node`. */
  readonly image?: string | undefined;
  /** MiB; default 512. */
  readonly memory?: number | undefined;
  /** Default 1. */
  readonly cpus?: number | undefined;
  /** Seconds the server may take to boot the sandbox; default: the server's. */
  readonly timeout?: number | undefined;
  /** `["K=V"]`. */
  readonly envs?: readonly string[] | undefined;
  /** Absolute guest path. */
  readonly workdir?: string | undefined;
  /** `["host:guest"]`, within what the server's policy allows. */
  readonly volumes?: readonly string[] | undefined;
  /** `["hostPort:guestPort"]`, within the server's port range. */
  readonly ports?: readonly string[] | undefined;
  /** `"public"` (default on the server), `"none"` or `"any"` (if the server allows it). */
  readonly network?: "none" | "public" | "any" | undefined;
  /** Aborting gives up waiting and stops whatever the server started. */
  readonly signal?: AbortSignal | undefined;
}

/** Where the sandbox lives and what it is called. */
export interface SandboxOptions extends StartOptions {
  /** `^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$`; generated (`sandbox-xxxxxxxx`) when omitted. */
  readonly name?: string | undefined;
  /** Default: `MSB_SERVER_URL`, else http://127.0.0.1:5555. */
  readonly serverUrl?: string | undefined;
  /** Default "default". */
  readonly namespace?: string | undefined;
  /** Default: `MSB_API_KEY`; not needed with `msb server start --dev`. */
  readonly apiKey?: string | undefined;
}

export interface RunOptions extends OutputHandlers {
  /** Seconds; the server stops the cell when it expires (`status === "timeout"`). */
  readonly timeout?: number | undefined;
  readonly signal?: AbortSignal | undefined;
}

function envValue(name: string): string | undefined {
  const value = process.env[name];
  return value === undefined || value === "" ? undefined : value;
}

/**
 * A named sandbox on an msb server. `await PythonSandbox.create({ name })` returns it started;
 * `await sb.stop()` (or `await using sb = …`) stops it.
 */
export abstract class BaseSandbox implements AsyncDisposable {
  /** REPL language sent to `sandbox.repl.run`. */
  abstract readonly language: string;
  /** Image used when none is given. */
  abstract readonly defaultImage: string;

  readonly name: string;
  readonly namespace: string;
  readonly serverUrl: string;
  /** Shell commands: `await sb.command.run("ls", ["-la"])`. */
  readonly command: Command;
  /** Resource usage: `await sb.metrics.memory()`. */
  readonly metrics: Metrics;
  /** Guest files (needs `sandbox.files.*` on the server). */
  readonly files: Files;

  readonly #rpc: RpcClient;
  #started = false;

  constructor(options: SandboxOptions = {}) {
    this.serverUrl = (
      options.serverUrl ??
      envValue("MSB_SERVER_URL") ??
      DEFAULT_SERVER_URL
    ).replace(/\/+$/, "");
    this.namespace = options.namespace ?? "default";
    this.name = options.name ?? `sandbox-${randomUUID().slice(0, 8)}`;
    this.#rpc = new RpcClient({
      serverUrl: this.serverUrl,
      apiKey: options.apiKey ?? envValue("MSB_API_KEY"),
    });
    const channel: SandboxChannel = {
      name: this.name,
      namespace: this.namespace,
      serverUrl: this.serverUrl,
      rpc: this.#rpc,
      requireStarted: () => this.#requireStarted(),
      callWithOutput: (method, params, timeout, handlers, signal) =>
        this.#callWithOutput(method, params, timeout, handlers, signal),
    };
    this.command = new Command(channel);
    this.metrics = new Metrics(channel);
    this.files = new Files(channel);
  }

  /** Creates and starts a sandbox of this kind; resolves once its guest is ready. */
  static async create<T extends BaseSandbox>(
    this: new (options?: SandboxOptions) => T,
    options: SandboxOptions = {},
  ): Promise<T> {
    const sandbox = new this(options);
    await sandbox.start(options);
    return sandbox;
  }

  get isStarted(): boolean {
    return this.#started;
  }

  /** The image `start` uses when given none (kept from the original SDK). */
  getDefaultImage(): Promise<string> {
    return Promise.resolve(this.defaultImage);
  }

  /**
   * Starts the sandbox. Starting a running sandbox with the same configuration is a no-op on
   * the server; with another configuration it rejects with SandboxExistsError.
   */
  async start(options: StartOptions = {}): Promise<void> {
    if (this.#started) return;
    const config: Record<string, unknown> = {
      image: options.image ?? this.defaultImage,
      memory: options.memory ?? 512,
      cpus: Math.max(1, Math.round(options.cpus ?? 1)),
    };
    for (const key of ["timeout", "envs", "workdir", "volumes", "ports", "network"] as const) {
      if (options[key] !== undefined) config[key] = options[key];
    }
    try {
      await this.#rpc.call(
        "sandbox.start",
        { sandbox: this.name, namespace: this.namespace, config },
        {
          timeoutMs:
            options.timeout === undefined
              ? DEFAULT_START_WAIT_SECONDS * 1000
              : clientTimeoutMs(options.timeout),
          signal: options.signal,
        },
      );
    } catch (err) {
      // Gave up waiting (abort, client deadline): the server may still finish the start, so
      // stop it; never for a server answer such as SANDBOX_EXISTS (someone else's sandbox).
      const clientSide =
        (options.signal?.aborted ?? false) ||
        (err instanceof TimeoutError && err.rpcCode === undefined);
      if (clientSide) await this.#stopQuietly();
      throw err;
    }
    this.#started = true;
  }

  /**
   * Stops the sandbox and its VM. A sandbox that is already gone counts as stopped. `remove`
   * (default false) deletes it too, its files included; the name is then free.
   */
  async stop(options: { readonly remove?: boolean } = {}): Promise<void> {
    if (!this.#started) return;
    try {
      await this.#rpc.call(
        "sandbox.stop",
        // `remove` only when asked: servers without it get the original request.
        options.remove === true
          ? { sandbox: this.name, namespace: this.namespace, remove: true }
          : { sandbox: this.name, namespace: this.namespace },
        { timeoutMs: CONTROL_TIMEOUT_SECONDS * 1000 },
      );
    } catch (err) {
      if (!(err instanceof SandboxNotFoundError)) throw err;
    }
    this.#started = false;
  }

  /** `await using sb = await NodeSandbox.create(…)` stops the sandbox at the end of the block. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /**
   * Runs `code` in the sandbox's REPL; state persists between calls. `onStdout`/`onStderr` get
   * output as it is produced when the server streams (docs/streaming.md), otherwise all of it,
   * in order, when the cell ends.
   */
  async run(code: string, options: RunOptions = {}): Promise<Execution> {
    this.#requireStarted();
    const params: Record<string, unknown> = {
      sandbox: this.name,
      namespace: this.namespace,
      language: this.language,
      code,
    };
    if (options.timeout !== undefined) params["timeout"] = options.timeout;
    const result = await this.#callWithOutput(
      "sandbox.repl.run",
      params,
      options.timeout,
      options,
      options.signal,
    );
    return new Execution(result);
  }

  async #callWithOutput(
    method: string,
    params: Record<string, unknown>,
    timeoutSeconds: number | undefined,
    handlers: OutputHandlers,
    signal: AbortSignal | undefined,
  ): Promise<unknown> {
    const options = { timeoutMs: clientTimeoutMs(timeoutSeconds), signal };
    if (handlers.onStdout === undefined && handlers.onStderr === undefined) {
      return this.#rpc.call(method, params, options);
    }
    const dispatch = outputDispatcher(handlers);
    const { result, streamed } = await this.#rpc.callStreaming(method, params, dispatch, options);
    if (!streamed) {
      for (const { stream, text } of replayChunks(result)) await dispatch(stream, text);
    }
    return result;
  }

  #requireStarted(): void {
    if (!this.#started) {
      throw new MicrosandboxError(
        `sandbox '${this.name}' is not started: use \`await ${this.constructor.name}.create(…)\` or call \`await sandbox.start()\` first`,
        "SANDBOX_NOT_STARTED",
      );
    }
  }

  async #stopQuietly(): Promise<void> {
    try {
      await this.#rpc.call(
        "sandbox.stop",
        { sandbox: this.name, namespace: this.namespace },
        { timeoutMs: CONTROL_TIMEOUT_SECONDS * 1000 },
      );
    } catch {
      // Best effort on the way out of a failed start; the start's error is what matters.
    }
  }
}

/** Runs Python; variables, imports and functions persist between `run` calls. */
export class PythonSandbox extends BaseSandbox {
  readonly language = "python";
  readonly defaultImage = "microsandbox/python";
}

/** Runs JavaScript; `var` bindings and top-level `await` work across `run` calls. */
export class NodeSandbox extends BaseSandbox {
  // "nodejs" is what the original SDK sent; msb accepts node, nodejs and javascript.
  readonly language = "nodejs";
  readonly defaultImage = "microsandbox/node";
}
