/** One parsed line of a service log (pino JSON), or a raw line wrapped into that shape. */
export interface LogEntry {
  readonly level: number;
  readonly time: string;
  readonly svc: string;
  readonly msg: string;
  /** Every other field of the JSON line. */
  readonly fields: Readonly<Record<string, unknown>>;
  /** The line as it is in the file. */
  readonly raw: string;
}

const LEVEL_NAMES: Readonly<Record<number, string>> = {
  10: "TRACE",
  20: "DEBUG",
  30: "INFO",
  40: "WARN",
  50: "ERROR",
  60: "FATAL",
};

export const WARN_LEVEL = 40;

export function levelName(level: number): string {
  return LEVEL_NAMES[level] ?? `L${level}`;
}

/**
 * Parses one log line. Lines that are not pino JSON (a Node crash trace on stderr, say) are
 * kept, as `fallbackLevel` entries of `svc`, so nothing a service prints is lost.
 */
export function parseLogLine(raw: string, svc: string, fallbackLevel = 30): LogEntry {
  if (raw.startsWith("{")) {
    try {
      const value = JSON.parse(raw) as unknown;
      if (value !== null && typeof value === "object" && !Array.isArray(value)) {
        const { level, time, svc: lineSvc, msg, ...fields } = value as Record<string, unknown>;
        return {
          level: typeof level === "number" ? level : fallbackLevel,
          time:
            typeof time === "string"
              ? time
              : typeof time === "number"
                ? new Date(time).toISOString()
                : "",
          svc: typeof lineSvc === "string" ? lineSvc : svc,
          msg: typeof msg === "string" ? msg : "",
          fields,
          raw,
        };
      }
    } catch {
      // Not JSON after all: fall through to a raw entry.
    }
  }
  return { level: fallbackLevel, time: "", svc, msg: raw, fields: {}, raw };
}

function formatValue(value: unknown): string {
  if (typeof value === "string") return /\s/.test(value) ? JSON.stringify(value) : value;
  return JSON.stringify(value);
}

/** Fields every line has or that are shown separately. */
const HIDDEN_FIELDS = new Set(["pid", "hostname", "raw", "err"]);

/** `12:03:04.123 WARN  vmm-agent: message key=value` — for people; `--json` prints raw lines. */
export function formatLogEntry(entry: LogEntry): string {
  const time = entry.time.length >= 23 ? entry.time.slice(11, 23) : entry.time || "-";
  const { err } = entry.fields;
  const extras = Object.entries(entry.fields)
    .filter(([k]) => !HIDDEN_FIELDS.has(k))
    .map(([k, v]) => `${k}=${formatValue(v)}`);
  const errText =
    err !== null && typeof err === "object" && "message" in err
      ? ` err=${formatValue(err.message)}`
      : "";
  return `${time} ${levelName(entry.level).padEnd(5)} ${entry.svc}: ${entry.msg}${
    extras.length > 0 ? ` ${extras.join(" ")}` : ""
  }${errText}`;
}
