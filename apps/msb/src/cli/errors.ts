import { MsbError, exitCodeOf, toMsbError } from "@msb/errors";

export interface RenderedError {
  readonly text: string;
  readonly exitCode: number;
}

/**
 * How a failed command ends: the message (which already says what to do next) on stderr and
 * the exit code from docs/errors.md. `--json` makes it one JSON object; `--debug` adds the
 * stack and cause, which are never shown otherwise.
 */
export function renderError(
  value: unknown,
  options: { json: boolean; debug: boolean },
): RenderedError {
  const err = value instanceof MsbError ? value : toMsbError(value);
  const exitCode = exitCodeOf(err);
  if (options.json) {
    const body: Record<string, unknown> = {
      code: err.code,
      message: err.message,
      details: err.details,
    };
    if (options.debug) body["stack"] = describeCause(value);
    return { text: `${JSON.stringify({ error: body })}\n`, exitCode };
  }
  let text = `msb: ${err.message}\n`;
  if (options.debug) text += `\n${describeCause(value)}\n`;
  else if (err.code === "INTERNAL") text += "Run again with --debug to see the cause.\n";
  return { text, exitCode };
}

function describeCause(value: unknown): string {
  const parts: string[] = [];
  let current: unknown = value;
  for (let depth = 0; current !== undefined && depth < 5; depth++) {
    parts.push(
      current instanceof Error ? (current.stack ?? current.message) : JSON.stringify(current),
    );
    current = current instanceof Error ? current.cause : undefined;
    if (current !== undefined) parts.push("caused by:");
  }
  return parts.join("\n");
}
