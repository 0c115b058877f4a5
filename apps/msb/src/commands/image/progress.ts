import type { ProgressEvent } from "@msb/wire";
import { formatBytes } from "../../cli/table.js";

/** A `progress` event of image.pull / image.build / image.push: the wire's own shape. */
export type { ProgressEvent };

/** `sha256:0123456789ab` — enough of a digest for people. */
export function shortDigest(digest: string): string {
  const [algo, hex = ""] = digest.includes(":") ? digest.split(":", 2) : ["", digest];
  return algo === "" ? hex.slice(0, 12) : `${algo}:${hex.slice(0, 12)}`;
}

/** `[#########-----------]` for `current` of `total` (empty bar when the total is unknown). */
export function bar(current: number, total: number, width = 20): string {
  const filled = total > 0 ? Math.min(width, Math.floor((current / total) * width)) : 0;
  return `[${"#".repeat(filled)}${"-".repeat(width - filled)}]`;
}

function sizes(current: number, total: number): string {
  return total > 0 ? `${formatBytes(current)} / ${formatBytes(total)}` : formatBytes(current);
}

/**
 * The line-per-event form (stderr not a terminal): every event, except the byte ticks of a
 * blob already announced, is one line; so a log shows each layer starting and finishing.
 */
export function createLineRenderer(): (event: ProgressEvent) => string | undefined {
  const announced = new Set<string>();
  return (e) => {
    // Status lines (resolving, build output, done) carry their own wording.
    if (e.digest === "") return `${e.message !== "" ? e.message : e.phase}\n`;
    const key = `${e.phase} ${e.digest}`;
    if ((e.phase === "downloading" || e.phase === "pushing") && announced.has(key))
      return undefined;
    announced.add(key);
    const total = e.current_total_bytes;
    const size =
      e.phase === "downloading" || e.phase === "pushing"
        ? sizes(e.current_bytes, total)
        : formatBytes(total > 0 ? total : e.current_bytes);
    const count = e.total_items > 0 ? ` (${e.done_items}/${e.total_items})` : "";
    return `${e.phase} ${shortDigest(e.digest)} ${size}${count}\n`;
  };
}

/** What the terminal form shows: one row per blob, then the latest status line. */
export interface BarState {
  readonly layers: Map<string, { phase: string; current: number; total: number }>;
  status: string;
}

export function createBarState(): BarState {
  return { layers: new Map(), status: "" };
}

/** Folds an event into the state shown by {@link renderBars}. */
export function applyEvent(state: BarState, e: ProgressEvent): void {
  if (e.digest !== "") {
    const prev = state.layers.get(e.digest);
    const total = e.current_total_bytes > 0 ? e.current_total_bytes : (prev?.total ?? 0);
    state.layers.set(e.digest, { phase: e.phase, current: e.current_bytes, total });
  }
  if (e.message !== "") state.status = e.message;
  else if (e.digest === "") state.status = e.phase;
}

/** The rows of the terminal form, without newlines. */
export function renderBars(state: BarState): string[] {
  const rows = [...state.layers].map(([digest, l]) => {
    const done = l.phase !== "downloading" && l.phase !== "pushing";
    const current = done && l.total > 0 ? l.total : l.current;
    return `${shortDigest(digest)}  ${bar(current, l.total)} ${sizes(current, l.total)}  ${l.phase}`;
  });
  if (state.status !== "") rows.push(state.status);
  return rows;
}

/**
 * Prints progress on stderr: redrawn bars on a terminal, a line per event otherwise. Build
 * output (`building` lines) scrolls above the bars on a terminal.
 */
export function createProgressPrinter(
  write: (text: string) => void,
  options: { tty: boolean },
): { update(event: ProgressEvent): void } {
  if (!options.tty) {
    const line = createLineRenderer();
    return {
      update(event) {
        const text = line(event);
        if (text !== undefined) write(text);
      },
    };
  }
  const state = createBarState();
  let drawn = 0;
  return {
    update(event) {
      // Cursor to the first drawn row, then each row cleared and rewritten.
      let text = drawn > 0 ? `\x1b[${drawn}F` : "";
      if (event.phase === "building" && event.digest === "" && event.message !== "") {
        text += `\x1b[2K${event.message}\n`;
        state.status = "";
      } else {
        applyEvent(state, event);
      }
      const rows = renderBars(state);
      for (const row of rows) text += `\x1b[2K${row}\n`;
      // Rows left over from a longer frame (a status line that went away) are cleared.
      for (let i = rows.length; i < drawn; i++) text += "\x1b[2K\n";
      drawn = Math.max(rows.length, drawn);
      write(text);
    },
  };
}
