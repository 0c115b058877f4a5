// msb Node.js REPL driver.
//
// Started by the host as `node --expose-internals /run/msb/repl/node.js` with a control
// channel on fd 3 (JSON lines, see docs/agent-protocol.md, "REPL drivers"). Cells run in this
// process's own realm (vm.runInThisContext) so values behave exactly as in a script
// (`instanceof Array` holds for arrays from `require`d modules); the driver's state lives in
// this module's closure, out of the user's reach. Top-level `let`/`const`/`class` become
// `var` so a cell can be run again, top-level `await` uses Node's own REPL transform, and the
// driver waits for the cell's promise and for short timers it started before answering.
"use strict";

const vm = require("node:vm");
const net = require("node:net");
const util = require("node:util");
const path = require("node:path");
const Module = require("node:module");

const DRIVER_FILE = __filename;
const SETTLE_MAX_MS = 2000; // wait for one-shot timers of a cell due within this delay

function optionalInternal(id) {
  try {
    return require(id); // needs --expose-internals
  } catch {
    return null;
  }
}
const awaitTransform = optionalInternal("internal/repl/await");
const acorn = optionalInternal("internal/deps/acorn/acorn/dist/acorn");

// ---- globals the user expects in a REPL

const replModule = new Module("<repl>");
replModule.filename = path.join(process.cwd(), "<repl>");
replModule.paths = Module._nodeModulePaths(process.cwd());
globalThis.module = replModule;
globalThis.exports = replModule.exports;
globalThis.require = Module.createRequire(replModule.filename);
globalThis.__filename = replModule.filename;
globalThis.__dirname = process.cwd();

// ---- timers started by a cell, so the driver can wait for the short ones

const pendingTimers = new Map(); // timer -> due time (ms since epoch)
const realSetTimeout = globalThis.setTimeout;
const realClearTimeout = globalThis.clearTimeout;
function trackedSetTimeout(fn, ms, ...args) {
  const delay = Number(ms) > 0 ? Number(ms) : 0;
  const timer = realSetTimeout(
    (...a) => {
      pendingTimers.delete(timer);
      if (typeof fn === "function") fn(...a);
    },
    delay,
    ...args,
  );
  pendingTimers.set(timer, Date.now() + delay);
  return timer;
}
trackedSetTimeout[util.promisify.custom] = realSetTimeout[util.promisify.custom];
globalThis.setTimeout = trackedSetTimeout;
globalThis.clearTimeout = (timer) => {
  pendingTimers.delete(timer);
  realClearTimeout(timer);
};

// ---- cell transformation

// Rewrites top-level `let`/`const`/`class` declarations into `var` so that re-running a cell
// does not fail with "Identifier has already been declared".
function hoistable(code) {
  if (!acorn) return code;
  let ast;
  try {
    ast = acorn.parse(code, {
      ecmaVersion: "latest",
      sourceType: "script",
      allowAwaitOutsideFunction: true,
      allowReturnOutsideFunction: false,
    });
  } catch {
    return code; // let V8 report the syntax error with its own message
  }
  const edits = [];
  for (const node of ast.body) {
    if (node.type === "VariableDeclaration" && node.kind !== "var") {
      edits.push({ start: node.start, end: node.start + node.kind.length, text: "var" });
    } else if (node.type === "ClassDeclaration" && node.id) {
      edits.push({ start: node.start, end: node.start, text: `var ${node.id.name} = ` });
      edits.push({ start: node.end, end: node.end, text: ";" });
    }
  }
  let out = code;
  for (const e of edits.sort((a, b) => b.start - a.start)) {
    out = out.slice(0, e.start) + e.text + out.slice(e.end);
  }
  return out;
}

let cellNo = 0;

function compileCell(code) {
  cellNo += 1;
  const filename = `<cell-${cellNo}>`;
  let source = hoistable(code);
  let wrapped = false;
  if (awaitTransform && source.includes("await")) {
    try {
      const w = awaitTransform.processTopLevelAwait(source);
      if (w !== null) {
        source = w;
        wrapped = true;
      }
    } catch {
      // not valid with await either: compile the original and let V8 say why
    }
  }
  // `{ a: 1 }` is an object to a REPL user, not a block.
  if (!wrapped && /^\s*\{/.test(source) && /\}\s*;?\s*$/.test(source)) {
    try {
      return { script: new vm.Script(`(${source.replace(/;\s*$/, "")})`, { filename }), wrapped };
    } catch {
      // a real block after all
    }
  }
  return { script: new vm.Script(source, { filename }), wrapped };
}

// ---- control channel

const ctrl = new net.Socket({ fd: 3, readable: true, writable: true });
function send(msg) {
  ctrl.write(`${JSON.stringify(msg)}\n`);
}

// Errors raised while a cell runs (also from its timers and unawaited promises).
let current = null; // { errors: [] } while a cell runs

function describe(err) {
  if (err instanceof Error || (err && typeof err === "object" && "stack" in err)) {
    const stack = String(err.stack || `${err.name}: ${err.message}`)
      .split("\n")
      .filter((l) => !l.includes(DRIVER_FILE) && !/\(node:(vm|internal)/.test(l) && !/at node:(vm|internal)/.test(l))
      .join("\n");
    return { type: err.name || "Error", message: String(err.message ?? ""), traceback: stack };
  }
  const text = util.inspect(err);
  return { type: "Error", message: text, traceback: `Uncaught ${text}` };
}

function report(err) {
  const d = describe(err);
  process.stderr.write(`Uncaught ${d.traceback}\n`);
  return d;
}

process.on("uncaughtException", (err) => {
  const d = report(err);
  if (current) current.errors.push(d);
});
process.on("unhandledRejection", (reason) => {
  const d = report(reason);
  if (current) current.errors.push(d);
});

let interruptCell = null;
process.on("SIGINT", () => {
  if (interruptCell) interruptCell();
});

function interruptedError() {
  const e = new Error("Script execution was interrupted by SIGINT");
  e.name = "KeyboardInterrupt";
  e.stack = "KeyboardInterrupt: Script execution was interrupted by SIGINT";
  return e;
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

async function settle(interrupted) {
  // Let microtasks and immediates run, then wait for short one-shot timers of this cell.
  const deadline = Date.now() + SETTLE_MAX_MS;
  for (;;) {
    await tick();
    await tick();
    if (interrupted.value) return;
    let next = Infinity;
    for (const due of pendingTimers.values()) if (due < next) next = due;
    if (next === Infinity || next > deadline) return;
    await new Promise((resolve) => realSetTimeout(resolve, Math.max(0, next - Date.now())));
  }
}

async function runCell(id, code) {
  current = { errors: [] };
  const interrupted = { value: false };
  let result;
  let failure = null;
  try {
    const { script, wrapped } = compileCell(code);
    let value = script.runInThisContext({ breakOnSigint: true, displayErrors: false });
    if (wrapped || (value && typeof value.then === "function")) {
      value = await new Promise((resolve, reject) => {
        interruptCell = () => {
          interrupted.value = true;
          reject(interruptedError());
        };
        Promise.resolve(value).then(resolve, reject);
      });
      if (wrapped) value = value && value.value;
    }
    result = value;
  } catch (err) {
    if (err && err.code === "ERR_SCRIPT_EXECUTION_INTERRUPTED") failure = interruptedError();
    else failure = err;
  }
  if (!interrupted.value) {
    // also after a failure: output of this cell's short timers belongs to this cell
    interruptCell = () => {
      interrupted.value = true;
    };
    await settle(interrupted);
  }
  interruptCell = null;
  if (!failure && result !== undefined) {
    globalThis._ = result;
    process.stdout.write(`${util.inspect(result, { colors: false })}\n`);
  }
  let error = null;
  if (failure) error = report(failure);
  else if (interrupted.value) error = describe(interruptedError());
  else if (current.errors.length) error = current.errors[0];
  current = null;
  send(error ? { id, status: "error", error } : { id, status: "success" });
}

// Cells run one at a time, in arrival order.
let queue = Promise.resolve();
let inbuf = "";
ctrl.setEncoding("utf8");
ctrl.on("data", (chunk) => {
  inbuf += chunk;
  let nl;
  while ((nl = inbuf.indexOf("\n")) >= 0) {
    const line = inbuf.slice(0, nl);
    inbuf = inbuf.slice(nl + 1);
    let msg;
    try {
      msg = JSON.parse(line);
      if (!msg || typeof msg !== "object" || typeof msg.code !== "string") throw new Error('expected {"id":..., "code": "..."}');
    } catch (err) {
      send({ id: null, status: "error", error: { type: "ProtocolError", message: String(err.message), traceback: "" } });
      continue;
    }
    queue = queue.then(() => runCell(msg.id, msg.code));
  }
});
ctrl.on("end", () => process.exit(0));
ctrl.on("error", () => process.exit(0));

send({ ready: true, language: "node", version: process.versions.node, pid: process.pid, top_level_await: Boolean(awaitTransform) });
