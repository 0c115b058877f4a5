import { closeSync, constants, openSync, writeSync } from "node:fs";

/**
 * Records a VM's console: appends to a log file until it reaches `maxBytes` (a guest may
 * print forever; the host disk must not pay for it) and always keeps the last lines in memory,
 * for error messages.
 */
export interface ConsoleRecorder {
  write(chunk: Buffer): void;
  tail(maxLines: number): string[];
  close(): void;
}

const KEPT_LINES = 200;
/** Terminal escape sequences (ESC [ … letter). */
const ANSI_ESCAPE = new RegExp(`${String.fromCharCode(27)}\\[[0-9;?]*[A-Za-z]`, "g");
const MAX_LINE_CHARS = 1000;

/** Escape sequences and carriage returns make error messages unreadable; long lines are cut. */
function clean(line: string): string {
  const text = line.replace(/\r$/, "").replace(ANSI_ESCAPE, "");
  return text.length > MAX_LINE_CHARS ? `${text.slice(0, MAX_LINE_CHARS)}…` : text;
}

export function createConsoleRecorder(path: string, maxBytes: number): ConsoleRecorder {
  // O_NOFOLLOW: the VM's directory belongs to the VM's uid; a symlink planted there must not
  // make the vmm-agent truncate a host file.
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
  let fd: number | undefined = openSync(path, flags, 0o600);
  let written = 0;
  const lines: string[] = [];
  let partial = "";

  const push = (line: string): void => {
    lines.push(clean(line));
    if (lines.length > KEPT_LINES) lines.shift();
  };

  return {
    write(chunk) {
      if (fd !== undefined && written < maxBytes) {
        const part = chunk.subarray(0, maxBytes - written);
        writeSync(fd, part);
        written += part.length;
        if (written >= maxBytes) writeSync(fd, "\n[msb: console log capped here]\n");
      }
      const text = partial + chunk.toString("utf8");
      const parts = text.split("\n");
      partial = parts.pop() ?? "";
      if (partial.length > MAX_LINE_CHARS * 4) {
        push(partial);
        partial = "";
      }
      for (const line of parts) push(line);
    },
    tail(maxLines) {
      const all = partial.length > 0 ? [...lines, clean(partial)] : lines;
      return all.filter((l) => l.trim().length > 0).slice(-maxLines);
    },
    close() {
      if (fd !== undefined) closeSync(fd);
      fd = undefined;
    },
  };
}

/** `[   17.380000] ` and similar printk time prefixes. */
const PRINTK_TIME = /^\[\s*\d+\.\d+\]\s*/;

/**
 * The guest kernel's last "Kernel panic - not syncing: …" line in `lines`, without its time
 * prefix, or undefined. A panic's stack dump pushes that line out of a short console tail, and
 * it is the one line that says why the VM died. The console is guest output: the text is only
 * ever quoted back to that sandbox's own caller.
 */
export function kernelPanicLine(lines: readonly string[]): string | undefined {
  for (let i = lines.length - 1; i >= 0; i -= 1) {
    const line = (lines[i] ?? "").replace(PRINTK_TIME, "");
    if (line.startsWith("Kernel panic - not syncing")) return line.replace(/\s*\]---$/, "");
  }
  return undefined;
}
