import type { OutputStreamName } from "./backends.js";

/**
 * One line of output as the original SDKs read it: they join `text` of one stream with "\n",
 * so each entry is a line without its newline.
 */
export interface OutputLine {
  readonly stream: OutputStreamName;
  readonly text: string;
}

/**
 * Turns streamed output chunks into lines, in arrival order, keeping at most `limitBytes`
 * (UTF-8 bytes of text plus one per line). Beyond the cap output is dropped and `truncated`
 * is set; a partial UTF-8 character split across chunks is decoded correctly.
 */
export class OutputCollector {
  readonly #limitBytes: number;
  readonly #lines: OutputLine[] = [];
  readonly #decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };
  readonly #pending = { stdout: "", stderr: "" };
  #usedBytes = 0;
  #truncated = false;

  constructor(limitBytes: number) {
    this.#limitBytes = limitBytes;
  }

  get truncated(): boolean {
    return this.#truncated;
  }

  push(stream: OutputStreamName, data: Uint8Array): void {
    if (this.#truncated) return;
    let text = this.#pending[stream] + this.#decoders[stream].decode(data, { stream: true });
    let newline = text.indexOf("\n");
    while (newline !== -1 && !this.#truncated) {
      this.#emit(stream, text.slice(0, newline));
      text = text.slice(newline + 1);
      newline = text.indexOf("\n");
    }
    // A line that never ends must not grow without bound.
    if (!this.#truncated && text.length > this.#limitBytes - this.#usedBytes) {
      this.#emit(stream, text);
      text = "";
    }
    this.#pending[stream] = this.#truncated ? "" : text;
  }

  /** Adds a line of the server's own (e.g. why a run was cut short); counted like output. */
  note(stream: OutputStreamName, text: string): void {
    this.#flush(stream);
    this.#emit(stream, text, true);
  }

  /** Flushes partial lines and returns everything collected. */
  finish(): { output: OutputLine[]; truncated: boolean } {
    this.#flush("stdout");
    this.#flush("stderr");
    return { output: [...this.#lines], truncated: this.#truncated };
  }

  #flush(stream: OutputStreamName): void {
    const rest = this.#pending[stream] + this.#decoders[stream].decode();
    this.#pending[stream] = "";
    if (rest !== "" && !this.#truncated) this.#emit(stream, rest);
  }

  #emit(stream: OutputStreamName, raw: string, always = false): void {
    const text = raw.endsWith("\r") ? raw.slice(0, -1) : raw;
    const size = Buffer.byteLength(text) + 1;
    if (always) {
      this.#lines.push({ stream, text });
      return;
    }
    const room = this.#limitBytes - this.#usedBytes;
    if (size <= room) {
      this.#lines.push({ stream, text });
      this.#usedBytes += size;
      return;
    }
    if (room > 1) {
      const cut = Buffer.from(text)
        .subarray(0, room - 1)
        .toString("utf8");
      this.#lines.push({ stream, text: cut });
    }
    this.#usedBytes = this.#limitBytes;
    this.#truncated = true;
  }
}
