import { InvalidArgumentError } from "commander";

/** `--port`: 1–65535 (0 is refused: clients must know where to dial). */
export function parsePort(value: string): number {
  const port = Number(value);
  if (!/^\d+$/.test(value) || port < 1 || port > 65535) {
    throw new InvalidArgumentError("expected a TCP port between 1 and 65535.");
  }
  return port;
}

/** `--tail`: a count of lines, 0 or more. */
export function parseCount(value: string): number {
  if (!/^\d+$/.test(value)) throw new InvalidArgumentError("expected a whole number (0 or more).");
  return Number(value);
}
