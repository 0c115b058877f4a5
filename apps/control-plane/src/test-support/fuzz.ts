import { ERROR_CODES } from "@msb/errors";
import type { RpcMethodName } from "../http/routes.js";

/**
 * Input generators and answer checks for the property tests of the HTTP edges
 * (`rpc-fuzz.int.test.ts`, `mcp-fuzz.int.test.ts`). Everything random comes from one seeded
 * PRNG, so a failing run is replayed with `MSB_FUZZ_SEED=<seed printed by the run>`.
 */

/** mulberry32: small, fast, good enough to pick mutations; not for anything secret. */
export interface Rng {
  readonly seed: number;
  /** [0, 1) */
  next(): number;
  int(maxExclusive: number): number;
  pick<T>(items: readonly T[]): T;
  chance(p: number): boolean;
}

export function createRng(seed: number): Rng {
  let a = seed >>> 0;
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
  return {
    seed,
    next,
    int: (max) => Math.floor(next() * max),
    pick: (items) => items[Math.floor(next() * items.length)]!,
    chance: (p) => next() < p,
  };
}

/** The seed of this run: `MSB_FUZZ_SEED`, else a fresh one (printed by the tests). */
export function fuzzSeed(): number {
  const fromEnv = process.env["MSB_FUZZ_SEED"];
  if (fromEnv !== undefined && fromEnv !== "") return Number(fromEnv) >>> 0;
  return Math.floor(Math.random() * 4_294_967_296);
}

/** Cases per test: `MSB_FUZZ_CASES` (the soak run sets it high), else `normal`. */
export function fuzzCases(normal: number): number {
  const fromEnv = Number(process.env["MSB_FUZZ_CASES"] ?? "");
  return Number.isInteger(fromEnv) && fromEnv > 0 ? fromEnv : normal;
}

/** Strings that have broken servers before: paths, control characters, bidi marks, huge ones. */
export const NASTY_STRINGS: readonly string[] = [
  "",
  " ",
  "../x",
  "../../../../etc/passwd",
  "a/b",
  "/",
  "\\",
  "C:\\Windows",
  "a\u0000b",
  "\u0000",
  "\u202eevil\u202c",
  "\u200f\u200e",
  "\ud800",
  "\udfff\ud800",
  "😀",
  "é".repeat(64),
  "x".repeat(63),
  "x".repeat(64),
  "-leading-dash",
  "_x",
  "__proto__",
  "constructor",
  "toString",
  "*",
  "default",
  "%00",
  "${HOME}",
  "$(id)",
  "`id`",
  "'; DROP TABLE sandboxes; --",
  "\r\nX-Injected: 1",
  "<script>alert(1)</script>",
  "NaN",
  "null",
  "1e309",
  "x".repeat(100_000),
];

export const NASTY_NUMBERS: readonly number[] = [
  0,
  -1,
  1,
  0.5,
  -0.0,
  1e308,
  -1e308,
  Number.MAX_SAFE_INTEGER,
  Number.MAX_SAFE_INTEGER + 2,
  2 ** 32,
  2 ** 31 - 1,
  1e-300,
];

/** A random JSON value, at most `depth` deep. */
export function randomJson(rng: Rng, depth = 3): unknown {
  const kind = rng.int(depth <= 0 ? 5 : 7);
  switch (kind) {
    case 0:
      return null;
    case 1:
      return rng.chance(0.5);
    case 2:
      return rng.chance(0.5) ? rng.pick(NASTY_NUMBERS) : rng.int(1000) - 500;
    case 3:
      return rng.pick(NASTY_STRINGS);
    case 4:
      return randomString(rng);
    case 5: {
      const n = rng.int(4);
      return Array.from({ length: n }, () => randomJson(rng, depth - 1));
    }
    default: {
      const o: Record<string, unknown> = {};
      for (let i = rng.int(4); i > 0; i--) {
        o[rng.chance(0.3) ? rng.pick(NASTY_STRINGS).slice(0, 40) : randomString(rng)] = randomJson(
          rng,
          depth - 1,
        );
      }
      return o;
    }
  }
}

export function randomString(rng: Rng): string {
  const n = rng.int(24);
  let s = "";
  for (let i = 0; i < n; i++) {
    const r = rng.next();
    // Mostly ASCII, some BMP, some astral and lone surrogates.
    s +=
      r < 0.7
        ? String.fromCharCode(32 + rng.int(95))
        : r < 0.9
          ? String.fromCharCode(rng.int(0xffff))
          : String.fromCodePoint(0x10000 + rng.int(0xfffff));
  }
  return s;
}

/** `levels` nested arrays (or objects) around `inner`, as JSON text (no recursion needed). */
export function deepJson(levels: number, kind: "array" | "object", inner = "1"): string {
  return kind === "array"
    ? "[".repeat(levels) + inner + "]".repeat(levels)
    : '{"a":'.repeat(levels) + inner + "}".repeat(levels);
}

/**
 * Stands for a 10 000-level nested value: JSON.stringify (the client's, not the server's)
 * cannot write one, so `serialize` splices the text in.
 */
export const DEEP_MARKER = "\u0000deep\u0000";

/** JSON.stringify, with every DEEP_MARKER string replaced by 10 000 nested arrays or objects. */
export function serialize(value: unknown, levels = 10_000): string {
  let n = 0;
  return JSON.stringify(value).replaceAll(JSON.stringify(DEEP_MARKER), () =>
    deepJson(levels, n++ % 2 === 0 ? "array" : "object"),
  );
}

/** Replaces one value somewhere inside `value` (a deep copy is returned). */
export function mutateValue(rng: Rng, value: unknown, replacement: () => unknown): unknown {
  if (value === null || typeof value !== "object" || rng.chance(0.25)) return replacement();
  if (Array.isArray(value)) {
    const copy = [...(value as unknown[])];
    if (copy.length === 0 || rng.chance(0.2)) copy.push(replacement());
    else {
      const i = rng.int(copy.length);
      copy[i] = mutateValue(rng, copy[i], replacement);
    }
    return copy;
  }
  const copy: Record<string, unknown> = { ...(value as Record<string, unknown>) };
  const keys = Object.keys(copy);
  const r = rng.next();
  if (keys.length === 0 || r < 0.15)
    copy[rng.pick(["extra", "__proto__", "x".repeat(200)])] = replacement();
  else if (r < 0.3) delete copy[rng.pick(keys)];
  else {
    const k = rng.pick(keys);
    copy[k] = mutateValue(rng, copy[k], replacement);
  }
  return copy;
}

/** Flips, inserts or deletes a few bytes of a serialized request (may break JSON or UTF-8). */
export function mutateBytes(rng: Rng, text: string): Buffer {
  let bytes = Buffer.from(text, "utf8");
  for (let i = 1 + rng.int(3); i > 0; i--) {
    const at = rng.int(bytes.length + 1);
    const r = rng.next();
    if (r < 0.4 && bytes.length > 0) {
      const b = Buffer.from(bytes);
      b[Math.min(at, b.length - 1)] = rng.int(256);
      bytes = b;
    } else if (r < 0.7) {
      const ins = rng.pick([
        Buffer.from([0xff]),
        Buffer.from([0xc3]),
        Buffer.from([0xed, 0xa0, 0x80]),
        Buffer.from([0x00]),
        Buffer.from("{"),
        Buffer.from("]"),
        Buffer.from(","),
        Buffer.from('"'),
        Buffer.from("\\u"),
      ]);
      bytes = Buffer.concat([bytes.subarray(0, at), ins, bytes.subarray(at)]);
    } else {
      bytes = Buffer.concat([bytes.subarray(0, at), bytes.subarray(at + 1 + rng.int(4))]);
    }
  }
  return bytes;
}

/** What a JSON-RPC server owes for a body it can parse (JSON-RPC 2.0 §5, §6). */
export interface Expectation {
  /** Ids of the answers it owes (null where the request's id could not be read). */
  readonly ids: (string | number | null)[];
  readonly batch: boolean;
}

/** The answers owed for a parsed body; undefined when the body is not JSON at all. */
export function expectedAnswers(body: unknown, maxBatch: number): Expectation | "envelope" {
  if (Array.isArray(body)) {
    if (body.length === 0 || body.length > maxBatch) return "envelope";
    return { batch: true, ids: body.flatMap((item) => owed(item)) };
  }
  return { batch: false, ids: owed(body) };
}

function owed(item: unknown): (string | number | null)[] {
  if (item === null || typeof item !== "object" || Array.isArray(item)) return [null];
  const req = item as Record<string, unknown>;
  const hasId = Object.hasOwn(req, "id");
  const id = req["id"];
  const idOk = id === null || typeof id === "string" || typeof id === "number";
  if (hasId && !idOk) return [null];
  const params = req["params"];
  const valid =
    req["jsonrpc"] === "2.0" &&
    typeof req["method"] === "string" &&
    req["method"] !== "" &&
    (params === undefined || (params !== null && typeof params === "object"));
  if (!hasId) return valid ? [] : [null];
  return [id as string | number | null];
}

const KNOWN_CODES: ReadonlySet<string> = new Set(ERROR_CODES);

/** Text that must never reach a caller: stack frames, source paths, vague faults. */
export function leaks(text: string): string | undefined {
  const checks: [RegExp | string, string][] = [
    [/\bat [^\n"]*\(?[^\s"()]+\.[cm]?[jt]s:\d+:\d+\)?/, "a stack frame"],
    ["node_modules", "a node_modules path"],
    [process.cwd(), "the server's working directory"],
    [/Unknown error/i, '"Unknown error"'],
    [/Internal server error/i, '"Internal server error"'],
    [/\[object Object\]/, "[object Object]"],
    [/(?<!received )\bundefined\b/, "the word undefined (a template hole)"],
  ];
  for (const [pattern, what] of checks) {
    if (typeof pattern === "string" ? text.includes(pattern) : pattern.test(text)) return what;
  }
  return undefined;
}

/**
 * Checks one JSON-RPC response object; returns what is wrong with it, or undefined.
 * INTERNAL is always wrong here: the fake backends never fault, so an INTERNAL answer means
 * bad input reached an unguarded path.
 */
export function checkResponse(value: unknown): string | undefined {
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return "a response is not a JSON object";
  }
  const r = value as Record<string, unknown>;
  if (r["jsonrpc"] !== "2.0") return 'jsonrpc is not "2.0"';
  if (!Object.hasOwn(r, "id")) return "no id member";
  const id = r["id"];
  if (!(id === null || typeof id === "string" || typeof id === "number")) return "bad id type";
  const hasResult = Object.hasOwn(r, "result");
  const hasError = Object.hasOwn(r, "error");
  if (hasResult === hasError) return "needs exactly one of result and error";
  if (hasResult) return undefined;
  const e = r["error"] as Record<string, unknown> | null;
  if (e === null || typeof e !== "object") return "error is not an object";
  if (!Number.isInteger(e["code"])) return "error.code is not an integer";
  if (typeof e["message"] !== "string" || e["message"].trim() === "") return "empty error.message";
  const data = e["data"] as Record<string, unknown> | null | undefined;
  const code = data?.["code"];
  if (typeof code !== "string" || !KNOWN_CODES.has(code))
    return "error.data.code is not a known code";
  if (code === "INTERNAL") return `INTERNAL for bad input: ${e["message"]}`;
  return undefined;
}

const B64 = Buffer.from("hello").toString("base64");

/**
 * One valid request per JSON-RPC method (sandbox "sb" in namespace "default"): the starting
 * points of the fuzz mutations and the calls of the auth matrix. A new method needs a sample
 * here, or the type check fails.
 */
export const RPC_SAMPLES: Readonly<Record<RpcMethodName, Record<string, unknown>>> = {
  "sandbox.start": {
    sandbox: "sb",
    namespace: "default",
    config: { image: "microsandbox/python", memory: 512, cpus: 1, envs: ["A=1"], workdir: "/w" },
  },
  "sandbox.stop": { sandbox: "sb", namespace: "default" },
  "sandbox.metrics.get": { namespace: "default", sandbox: "sb" },
  "sandbox.repl.run": { sandbox: "sb", language: "python", code: "print(1)", timeout: 5 },
  "sandbox.command.run": { sandbox: "sb", command: "ls", args: ["-la", "/"], timeout: 5 },
  "sandbox.files.write": { sandbox: "sb", path: "/tmp/a", data: B64, mode: 420 },
  "sandbox.files.read": { sandbox: "sb", path: "/tmp/a", max_bytes: 100 },
  "image.pull": { reference: "microsandbox/python" },
  "image.list": {},
  "image.remove": { reference: "microsandbox/python" },
  "image.build": { definition_dir: "/tmp/def", tag: "x:1" },
  "image.push": { reference: "microsandbox/python", target: "localhost:5000/x" },
};
