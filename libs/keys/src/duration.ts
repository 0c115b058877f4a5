import { MsbError } from "@msb/errors";

const UNIT_MS: Readonly<Record<string, number>> = {
  s: 1_000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** Longest duration accepted (about 100 years): beyond that a date is not a date any more. */
const MAX_DURATION_MS = 100 * 365 * UNIT_MS["d"]!;

const WHOLE = /^(?:\d+[smhdw])+$/;
const PART = /(\d+)([smhdw])/g;

/**
 * Parses a human duration as `msb server keygen --expire` takes it: an integer and a unit
 * (`s`, `m`, `h`, `d`, `w`), optionally repeated (`"90s"`, `"30m"`, `"24h"`, `"7d"`, `"1h30m"`).
 * Returns milliseconds. Anything else (no unit, zero, negative, fractions) is INVALID_PARAMS
 * with a message that shows the accepted forms.
 */
export function parseDuration(text: string): number {
  const input = text.trim().toLowerCase();
  const fail = (why: string): MsbError =>
    new MsbError(
      "INVALID_PARAMS",
      `Invalid duration '${text}': ${why}. Use an integer with a unit s, m, h, d or w, e.g. 90s, 30m, 24h, 7d, 1h30m.`,
      { details: { field: "duration", value: text } },
    );
  if (!WHOLE.test(input)) throw fail("not a duration");
  let total = 0;
  for (const [, amount, unit] of input.matchAll(PART)) {
    total += Number(amount) * UNIT_MS[unit!]!;
  }
  if (total <= 0) throw fail("it must be longer than zero");
  if (!Number.isSafeInteger(total) || total > MAX_DURATION_MS) throw fail("it is too long");
  return total;
}
