import { StringDecoder } from "node:string_decoder";
import { MsbError } from "@msb/errors";
import type { AgentClient } from "./client.js";
import type { ExecParams, OutputChunk, ProcessHandle } from "./types.js";
import { replReadySchema, replResultSchema, type ReplError } from "./messages.js";

export type ReplLanguage = "python" | "node";

/** Where the agent installs the drivers inside every guest (a tmpfs filled from the initramfs). */
export const REPL_DRIVER_DIR = "/run/msb/repl";

/** How each driver is started with the image's own interpreter. */
export const REPL_DRIVER_ARGV: Readonly<Record<ReplLanguage, readonly string[]>> = {
  python: ["python3", "-u", `${REPL_DRIVER_DIR}/python.py`],
  node: ["node", "--expose-internals", `${REPL_DRIVER_DIR}/node.js`],
};

export interface ReplSessionOptions {
  readonly language: ReplLanguage;
  /** Overrides the driver command (tests, custom images). */
  readonly argv?: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
  /** Deadline for the interpreter to start and say it is ready, in ms. Default 60 000. */
  readonly startTimeoutMs?: number;
  /** After SIGINT on a timeout, how long the cell may take to stop before the driver is
   * killed and restarted, in ms. Default 2 000. */
  readonly interruptGraceMs?: number;
  /** Output kept per `run`, in bytes (UTF-8 text); the rest is dropped and reported. Default 1 MiB. */
  readonly maxOutputBytes?: number;
}

export interface ReplRunOptions {
  /** The cell's time limit in ms; then SIGINT, then kill + restart. Default 30 000. */
  readonly timeoutMs?: number;
  /** Streams output as it arrives (not subject to maxOutputBytes). */
  readonly onOutput?: (chunk: { stream: "stdout" | "stderr"; text: string }) => void;
  readonly signal?: AbortSignal;
  /**
   * Host housekeeping (warm-up, reseed after a restore): the driver gives the cell no
   * number, so the user's first cell is still `<cell-1>`. Output is still returned.
   */
  readonly hidden?: boolean;
}

export interface ReplOutput {
  readonly stream: "stdout" | "stderr";
  readonly text: string;
}

/** Outcome of one cell. `restarted` means the interpreter was replaced and its state is gone. */
export interface ReplResult {
  readonly status: "success" | "error" | "timeout";
  readonly output: readonly ReplOutput[];
  readonly error?: ReplError;
  readonly truncated: boolean;
  readonly restarted: boolean;
  readonly durationMs: number;
}

const MAX_CTRL_LINE_BYTES = 2 * 1024 * 1024;

interface Cell {
  readonly id: number;
  readonly output: ReplOutput[];
  readonly decoders: { stdout: StringDecoder; stderr: StringDecoder };
  kept: number;
  truncated: boolean;
  onOutput?: ReplRunOptions["onOutput"];
  settle: (r: { status: "success" | "error"; error?: ReplError } | { died: unknown }) => void;
}

/**
 * Drives one REPL driver process in the guest: one cell at a time, output captured per cell
 * (capped, truncation reported), timeouts interrupt the cell (SIGINT) and, if it does not stop
 * within the grace period, kill and restart the interpreter — and the result says so.
 */
export class ReplSession {
  readonly #client: AgentClient;
  readonly #options: ReplSessionOptions;
  #proc: ProcessHandle | undefined;
  #starting: Promise<void> | undefined;
  #ctrlBuf = "";
  #ctrlBytes = 0;
  #ctrlDecoder = new StringDecoder("utf8");
  #ready: ((ok: unknown) => void) | undefined;
  #cell: Cell | undefined;
  #seq = 0;
  #queue: Promise<unknown> = Promise.resolve();
  #closed = false;

  constructor(client: AgentClient, options: ReplSessionOptions) {
    this.#client = client;
    this.#options = options;
  }

  get language(): ReplLanguage {
    return this.#options.language;
  }

  /** Starts the interpreter (also done lazily by the first `run`). */
  async start(): Promise<void> {
    if (this.#proc) return;
    this.#starting ??= this.#spawn().finally(() => (this.#starting = undefined));
    await this.#starting;
  }

  /**
   * Takes over a driver that is already running and ready (its stream is in the agent's
   * HELLO `streams`): the warm REPL of a restored template snapshot. Fails if the session
   * already has an interpreter.
   */
  adopt(stream: number): void {
    if (this.#proc || this.#starting || this.#closed) {
      throw new MsbError("INVALID_PARAMS", "This REPL session already has an interpreter.");
    }
    const proc = this.#client.adoptProcess(stream, {
      onOutput: (chunk) => this.#onOutput(chunk),
      onCtrl: (data) => this.#onCtrl(data),
    });
    this.#attach(proc);
  }

  /** The agent stream of the running interpreter, if there is one (to adopt it elsewhere). */
  get stream(): number | undefined {
    return this.#proc?.stream;
  }

  /** Runs one cell; cells queue behind each other. */
  async run(code: string, options: ReplRunOptions = {}): Promise<ReplResult> {
    const next = this.#queue.then(() => this.#run(code, options));
    this.#queue = next.catch(() => undefined);
    return next;
  }

  /** Stops the interpreter. */
  async close(): Promise<void> {
    this.#closed = true;
    const proc = this.#proc;
    this.#proc = undefined;
    if (proc) {
      await proc.kill().catch(() => undefined);
      await proc.exit.catch(() => undefined);
    }
  }

  /** Makes `proc` the session's interpreter; its exit ends the session's cells. */
  #attach(proc: ProcessHandle): void {
    this.#proc = proc;
    void proc.exit.then(
      (exit) =>
        this.#onDied(
          proc,
          `the ${this.#options.language} interpreter exited (code ${exit.exitCode}${exit.oomKilled ? ", out of memory" : ""})`,
        ),
      (err: unknown) => this.#onDied(proc, err),
    );
  }

  async #spawn(): Promise<void> {
    if (this.#closed) throw new MsbError("INVALID_REQUEST", "This REPL session has been closed.");
    const argv = this.#options.argv ?? REPL_DRIVER_ARGV[this.#options.language];
    const params: ExecParams = {
      argv,
      env: { PYTHONUNBUFFERED: "1", ...this.#options.env },
      cwd: this.#options.cwd,
      ctrl: true,
    };
    this.#ctrlBuf = "";
    this.#ctrlBytes = 0;
    this.#ctrlDecoder = new StringDecoder("utf8");
    const startTimeoutMs = this.#options.startTimeoutMs ?? 60_000;
    const ready = new Promise<unknown>((resolve) => (this.#ready = resolve));
    let proc: ProcessHandle;
    try {
      proc = await this.#client.startProcess(params, {
        timeoutMs: startTimeoutMs,
        onOutput: (chunk) => this.#onOutput(chunk),
        onCtrl: (data) => this.#onCtrl(data),
      });
    } catch (err) {
      if (err instanceof MsbError && err.details.agentCode === "not_found") {
        throw new MsbError(
          "INVALID_PARAMS",
          `This image cannot run ${this.#options.language} code: ${argv[0]} was not found in it. Use an image that has it.`,
          { cause: err },
        );
      }
      throw err;
    }
    this.#attach(proc);
    let timer: NodeJS.Timeout | undefined;
    const outcome = await Promise.race([
      ready,
      proc.exit.then(
        () => new Error("exited before it was ready"),
        (e: unknown) => e,
      ),
      new Promise(
        (resolve) =>
          (timer = setTimeout(
            () => resolve(new Error(`not ready within ${startTimeoutMs} ms`)),
            startTimeoutMs,
          )),
      ),
    ]);
    clearTimeout(timer);
    this.#ready = undefined;
    if (outcome !== true) {
      await proc.kill().catch(() => undefined);
      this.#proc = undefined;
      if (outcome instanceof MsbError) throw outcome;
      const why = outcome instanceof Error ? outcome.message : String(outcome);
      throw new MsbError(
        why.startsWith("not ready") ? "AGENT_TIMEOUT" : "REPL_START_FAILED",
        `The ${this.#options.language} REPL could not start: ${why}. Check the sandbox log (the interpreter's stderr).`,
      );
    }
  }

  async #run(code: string, options: ReplRunOptions): Promise<ReplResult> {
    const started = Date.now();
    let restarted = false;
    if (!this.#proc) {
      restarted = this.#seq > 0; // a previous interpreter died between cells
      await this.start();
    }
    const proc = this.#proc;
    if (!proc) throw new MsbError("INTERNAL", "REPL driver missing after start.");
    const id = ++this.#seq;
    let settle!: Cell["settle"];
    const done = new Promise<Parameters<Cell["settle"]>[0]>((resolve) => (settle = resolve));
    const cell: Cell = {
      id,
      output: [],
      decoders: { stdout: new StringDecoder("utf8"), stderr: new StringDecoder("utf8") },
      kept: 0,
      truncated: false,
      onOutput: options.onOutput,
      settle,
    };
    this.#cell = cell;
    const finish = (status: ReplResult["status"], error?: ReplError): ReplResult => {
      if (this.#cell === cell) this.#cell = undefined;
      for (const s of ["stdout", "stderr"] as const) this.#append(cell, s, cell.decoders[s].end());
      return {
        status,
        output: cell.output,
        error,
        truncated: cell.truncated,
        restarted,
        durationMs: Date.now() - started,
      };
    };

    await proc.writeCtrl(
      `${JSON.stringify(options.hidden === true ? { id, code, hidden: true } : { id, code })}\n`,
    );
    const timeoutMs = options.timeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const limit = new Promise<"timeout" | "abort">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), timeoutMs);
      onAbort = () => resolve("abort");
      if (options.signal?.aborted) resolve("abort");
      options.signal?.addEventListener("abort", onAbort, { once: true });
    });
    const first = await Promise.race([done, limit]);
    clearTimeout(timer);
    if (onAbort) options.signal?.removeEventListener("abort", onAbort);

    if (first !== "timeout" && first !== "abort") {
      if ("died" in first) {
        restarted = await this.#restart(proc);
        return finish("error", {
          type: "ReplDied",
          message: describeDeath(first.died, this.#options.language),
          traceback: "",
        });
      }
      return finish(first.status, first.error);
    }

    // Over time (or cancelled): interrupt, give it a grace period, then replace the interpreter.
    await proc.signal("SIGINT").catch(() => undefined);
    const grace = this.#options.interruptGraceMs ?? 2_000;
    let graceTimer: NodeJS.Timeout | undefined;
    const after = await Promise.race([
      done,
      new Promise<"stuck">((r) => (graceTimer = setTimeout(() => r("stuck"), grace))),
    ]);
    clearTimeout(graceTimer);
    const message =
      first === "abort"
        ? "The cell was cancelled."
        : `The cell did not finish within ${timeoutMs} ms and was interrupted.`;
    const error: ReplError = {
      type: first === "abort" ? "Cancelled" : "TimeoutError",
      message,
      traceback: "",
    };
    if (after === "stuck" || "died" in after) {
      restarted = await this.#restart(proc);
      return finish("timeout", {
        ...error,
        message: `${message} It did not stop, so the interpreter was restarted and its state is lost.`,
      });
    }
    return finish("timeout", error);
  }

  /** Kills the interpreter and starts a new one. Returns true (state was lost). */
  async #restart(proc: ProcessHandle): Promise<boolean> {
    if (this.#proc === proc) this.#proc = undefined;
    await proc.kill().catch(() => undefined);
    await proc.exit.catch(() => undefined);
    if (!this.#closed) await this.start().catch(() => undefined); // retried by the next run
    return true;
  }

  #onDied(proc: ProcessHandle, why: unknown): void {
    if (this.#proc === proc) this.#proc = undefined;
    this.#ready?.(why instanceof Error ? why : new Error(String(why)));
    this.#cell?.settle({ died: why });
  }

  #append(cell: Cell, stream: "stdout" | "stderr", text: string): void {
    if (!text) return;
    cell.onOutput?.({ stream, text });
    const room = (this.#options.maxOutputBytes ?? 1024 * 1024) - cell.kept;
    if (room <= 0) {
      cell.truncated = true;
      return;
    }
    let piece = text;
    if (Buffer.byteLength(piece) > room) {
      piece = Buffer.from(piece)
        .subarray(0, room)
        .toString("utf8")
        .replace(/\uFFFD$/, "");
      cell.truncated = true;
    }
    cell.kept += Buffer.byteLength(piece);
    const last = cell.output[cell.output.length - 1];
    if (last && last.stream === stream)
      cell.output[cell.output.length - 1] = { stream, text: last.text + piece };
    else cell.output.push({ stream, text: piece });
  }

  #onOutput(chunk: OutputChunk): void {
    const cell = this.#cell;
    if (!cell) return; // between cells (interpreter banners, stray timers): not part of any result
    this.#append(cell, chunk.stream, cell.decoders[chunk.stream].write(chunk.data));
  }

  #onCtrl(data: Buffer): void {
    this.#ctrlBytes += data.length;
    this.#ctrlBuf += this.#ctrlDecoder.write(data);
    let nl: number;
    while ((nl = this.#ctrlBuf.indexOf("\n")) >= 0) {
      const line = this.#ctrlBuf.slice(0, nl);
      this.#ctrlBuf = this.#ctrlBuf.slice(nl + 1);
      this.#ctrlBytes = Buffer.byteLength(this.#ctrlBuf);
      this.#onCtrlLine(line);
    }
    if (this.#ctrlBytes > MAX_CTRL_LINE_BYTES) {
      // A driver that floods its control channel is broken or subverted: replace it.
      this.#ctrlBuf = "";
      this.#ctrlBytes = 0;
      const proc = this.#proc;
      if (proc) void proc.kill().catch(() => undefined);
    }
  }

  #onCtrlLine(line: string): void {
    let msg: unknown;
    try {
      msg = JSON.parse(line);
    } catch {
      return; // not ours (user code wrote to the channel): ignored
    }
    if (this.#ready && replReadySchema.safeParse(msg).success) {
      this.#ready(true);
      return;
    }
    const r = replResultSchema.safeParse(msg);
    const cell = this.#cell;
    if (!r.success || !cell || r.data.id !== cell.id) return;
    cell.settle(
      r.data.status === "success"
        ? { status: "success" }
        : {
            status: "error",
            error: r.data.error ?? { type: "Error", message: "the cell failed", traceback: "" },
          },
    );
  }
}

function describeDeath(why: unknown, language: string): string {
  const reason = why instanceof Error ? why.message : String(why);
  return `The ${language} interpreter died while running the cell (${reason}); it was restarted and its state is lost.`;
}

/** Creates a REPL session over an AgentClient (see ReplSession). */
export function createReplSession(client: AgentClient, options: ReplSessionOptions): ReplSession {
  return new ReplSession(client, options);
}
