/** One chunk of output as the server reports it. */
export interface OutputItem {
  readonly stream: string;
  readonly text: string;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function outputItems(result: Record<string, unknown>): OutputItem[] {
  const items = result["output"];
  if (!Array.isArray(items)) return [];
  const out: OutputItem[] = [];
  for (const item of items as unknown[]) {
    if (isRecord(item) && typeof item["text"] === "string") {
      out.push({
        stream: typeof item["stream"] === "string" ? item["stream"] : "stdout",
        text: item["text"],
      });
    }
  }
  return out;
}

/**
 * The text of one stream as a terminal would show it. msb sends chunks that keep their
 * newlines; the original microsandbox server sent one item per line without it. Both read the
 * same: chunks are concatenated, line items joined with "\n". Trailing newlines are dropped
 * (`console.log(await exec.output())` prints the text once, as the manual shows).
 */
export function joinStream(items: readonly OutputItem[], stream: string): string {
  const texts = items.filter((i) => i.stream === stream).map((i) => i.text);
  if (texts.length === 0) return "";
  const joined = texts.some((t) => t.includes("\n")) ? texts.join("") : texts.join("\n");
  return joined.replace(/[\r\n]+$/, "");
}

/**
 * The output of a finished call as the chunks a streaming server would have sent: line items
 * (no newline anywhere) get their newline back, chunks stay as they are.
 */
export function replayChunks(result: unknown): OutputItem[] {
  const items = isRecord(result) ? outputItems(result) : [];
  if (items.some((i) => i.text.includes("\n"))) return items;
  return items.map((i) => ({ stream: i.stream, text: `${i.text}\n` }));
}

/**
 * The outcome of one REPL cell (`sandbox.repl.run`). `status` is "success", "error" (the code
 * threw; the stack is in `error()`) or "timeout" (the cell was stopped; the sandbox keeps
 * working).
 */
export class Execution {
  readonly status: string;
  readonly language: string;
  /** The server dropped output beyond its cap. */
  readonly truncated: boolean;
  /** The `result` object as the server sent it. */
  readonly raw: Readonly<Record<string, unknown>>;
  readonly #items: OutputItem[];

  constructor(result: unknown) {
    const data = isRecord(result) ? result : {};
    this.raw = data;
    this.#items = outputItems(data);
    this.status = typeof data["status"] === "string" ? data["status"] : "unknown";
    this.language = typeof data["language"] === "string" ? data["language"] : "unknown";
    this.truncated = data["truncated"] === true;
  }

  /** Standard output of the cell. */
  output(): Promise<string> {
    return Promise.resolve(joinStream(this.#items, "stdout"));
  }

  /** Standard error of the cell (stack traces land here). */
  error(): Promise<string> {
    return Promise.resolve(joinStream(this.#items, "stderr"));
  }

  /**
   * True when the cell failed or timed out. msb's `status` tells the truth, so a warning on
   * stderr is not an error; a server that sends no usable status falls back to the original
   * rule (any stderr output is an error).
   */
  hasError(): boolean {
    if (this.status === "success" || this.status === "ok") return false;
    if (this.status === "error" || this.status === "exception" || this.status === "timeout") {
      return true;
    }
    return this.#items.some((i) => i.stream === "stderr" && i.text !== "");
  }
}

/** The outcome of one command (`sandbox.command.run`). */
export class CommandExecution {
  /** The process's exit code; -1 when it was killed or never ran. */
  readonly exitCode: number;
  readonly success: boolean;
  readonly command: string;
  readonly args: readonly string[];
  readonly timedOut: boolean;
  readonly truncated: boolean;
  readonly raw: Readonly<Record<string, unknown>>;
  readonly #items: OutputItem[];

  constructor(result: unknown) {
    const data = isRecord(result) ? result : {};
    this.raw = data;
    this.#items = outputItems(data);
    this.exitCode = typeof data["exit_code"] === "number" ? data["exit_code"] : -1;
    this.success = typeof data["success"] === "boolean" ? data["success"] : this.exitCode === 0;
    this.command = typeof data["command"] === "string" ? data["command"] : "";
    const args = data["args"];
    this.args = Array.isArray(args) ? args.map(String) : [];
    this.timedOut = data["timed_out"] === true || data["status"] === "timeout";
    this.truncated = data["truncated"] === true;
  }

  /** Standard output of the command. */
  output(): Promise<string> {
    return Promise.resolve(joinStream(this.#items, "stdout"));
  }

  /** Standard error of the command. */
  error(): Promise<string> {
    return Promise.resolve(joinStream(this.#items, "stderr"));
  }

  hasError(): boolean {
    return !this.success;
  }
}
