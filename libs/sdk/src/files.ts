import type { SandboxChannel } from "./channel.js";
import { FilesUnsupportedError, MethodNotFoundError } from "./errors.js";

/** Seconds the client waits for a file call. */
const FILES_TIMEOUT_SECONDS = 120;

/** One directory entry of `sandbox.files.list`. */
export interface FileEntry {
  readonly name: string;
  readonly type: "file" | "dir" | "symlink" | "other";
  /** Bytes. */
  readonly size: number;
  /** Permission bits, e.g. 0o644. */
  readonly mode: number;
  /** Seconds since the epoch. */
  readonly mtime: number;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Guest files of one sandbox (`sb.files`), over the `sandbox.files.*` methods proposed in
 * docs/streaming.md. A server without them rejects with FilesUnsupportedError.
 */
export class Files {
  readonly #sandbox: SandboxChannel;

  constructor(sandbox: SandboxChannel) {
    this.#sandbox = sandbox;
  }

  /** Writes `data` (a string is UTF-8 encoded) to the absolute guest `path`, creating parents. */
  async write(path: string, data: string | Uint8Array, options: { mode?: number } = {}) {
    const bytes = typeof data === "string" ? Buffer.from(data, "utf8") : Buffer.from(data);
    const params: Record<string, unknown> = {
      path,
      data: bytes.toString("base64"),
      encoding: "base64",
      create_parents: true,
    };
    if (options.mode !== undefined) params["mode"] = options.mode;
    await this.#call("sandbox.files.write", params);
  }

  /** The contents of the guest file `path`. */
  async read(path: string): Promise<Uint8Array> {
    const result = await this.#call("sandbox.files.read", { path, encoding: "base64" });
    const data = isRecord(result) && typeof result["data"] === "string" ? result["data"] : "";
    if (isRecord(result) && result["encoding"] === "utf8") return Buffer.from(data, "utf8");
    return Buffer.from(data, "base64");
  }

  /** The contents of the guest file `path`, decoded as UTF-8. */
  async readText(path: string): Promise<string> {
    return Buffer.from(await this.read(path)).toString("utf8");
  }

  /** The entries of the guest directory `path`, sorted by name. */
  async list(path = "/"): Promise<FileEntry[]> {
    const result = await this.#call("sandbox.files.list", { path });
    const entries = isRecord(result) ? result["entries"] : undefined;
    const out: FileEntry[] = [];
    for (const e of Array.isArray(entries) ? (entries as unknown[]) : []) {
      if (!isRecord(e)) continue;
      const type = e["type"];
      out.push({
        name: typeof e["name"] === "string" ? e["name"] : "",
        type: type === "file" || type === "dir" || type === "symlink" ? type : "other",
        size: Number(e["size"] ?? 0),
        mode: Number(e["mode"] ?? 0),
        mtime: Number(e["mtime"] ?? 0),
      });
    }
    return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async #call(method: string, params: Record<string, unknown>): Promise<unknown> {
    const sb = this.#sandbox;
    sb.requireStarted();
    try {
      return await sb.rpc.call(
        method,
        { sandbox: sb.name, namespace: sb.namespace, ...params },
        { timeoutMs: FILES_TIMEOUT_SECONDS * 1000 },
      );
    } catch (err) {
      if (err instanceof MethodNotFoundError) {
        throw new FilesUnsupportedError(
          `the msb server at ${sb.serverUrl} does not implement ${method}; upgrade it, or use sb.command.run("sh", ["-c", …]) to move files meanwhile`,
          "FILES_UNSUPPORTED",
          { cause: err, ...(err.rpcCode === undefined ? {} : { rpcCode: err.rpcCode }) },
        );
      }
      throw err;
    }
  }
}
