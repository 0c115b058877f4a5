// Host-side tests of the REPL drivers (images/agent/repl): each driver is spawned the way the
// guest agent does it, with its control channel on fd 3, and driven cell by cell.
// Run: node --test tools/agent/test-drivers.mjs
import { spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import { fileURLToPath } from "node:url";
import path from "node:path";
import test from "node:test";
import assert from "node:assert/strict";

const here = path.dirname(fileURLToPath(import.meta.url));
const replDir = path.resolve(here, "../../images/agent/repl");

class Driver {
  constructor(argv) {
    this.child = spawn(argv[0], argv.slice(1), { stdio: ["ignore", "pipe", "pipe", "pipe"], cwd: "/tmp" });
    this.out = [];
    this.lines = [];
    this.waiters = [];
    let buf = "";
    this.child.stdout.on("data", (d) => this.out.push({ stream: "stdout", text: String(d) }));
    this.child.stderr.on("data", (d) => this.out.push({ stream: "stderr", text: String(d) }));
    this.child.stdio[3].on("data", (d) => {
      buf += d;
      let i;
      while ((i = buf.indexOf("\n")) >= 0) {
        const msg = JSON.parse(buf.slice(0, i));
        buf = buf.slice(i + 1);
        const w = this.waiters.shift();
        if (w) w(msg);
        else this.lines.push(msg);
      }
    });
    this.seq = 0;
  }
  next() {
    if (this.lines.length) return Promise.resolve(this.lines.shift());
    return new Promise((r) => this.waiters.push(r));
  }
  async run(code, { interruptAfterMs } = {}) {
    const id = ++this.seq;
    this.out = [];
    this.child.stdio[3].write(`${JSON.stringify({ id, code })}\n`);
    let timer;
    if (interruptAfterMs) timer = setTimeout(() => this.child.kill("SIGINT"), interruptAfterMs);
    const res = await this.next();
    clearTimeout(timer);
    assert.equal(res.id, id);
    // the pipes are read by this process, so give them one turn to catch up
    await new Promise((r) => setTimeout(r, 50));
    const text = (s) => this.out.filter((o) => o.stream === s).map((o) => o.text).join("");
    return { ...res, stdout: text("stdout"), stderr: text("stderr") };
  }
  async close() {
    this.child.stdio[3].end();
    await once(this.child, "exit");
  }
}

const hasPython = spawnSync("python3", ["--version"]).status === 0;

test("python driver", { skip: !hasPython && "no python3" }, async (t) => {
  const d = new Driver(["python3", "-u", path.join(replDir, "python.py")]);
  const ready = await d.next();
  assert.equal(ready.ready, true);
  assert.equal(ready.language, "python");

  await t.test("state persists across cells", async () => {
    assert.equal((await d.run("name = 'World'")).status, "success");
    const r = await d.run("print(f'Hello {name}!')");
    assert.equal(r.status, "success");
    assert.equal(r.stdout, "Hello World!\n");
  });
  await t.test("print(5*5)", async () => {
    assert.equal((await d.run("print(5*5)")).stdout, "25\n");
  });
  await t.test("trailing expression shows its repr, __name__ is __main__", async () => {
    assert.equal((await d.run("x = [1, 'a']\nx")).stdout, "[1, 'a']\n");
    assert.equal((await d.run("__name__")).stdout, "'__main__'\n");
    assert.equal((await d.run("None")).stdout, "");
  });
  await t.test("multi-line cells with defs, decorators, blank lines", async () => {
    const code = [
      "import functools",
      "",
      "def twice(f):",
      "    @functools.wraps(f)",
      "    def g(*a):",
      "        return 2 * f(*a)",
      "",
      "    return g",
      "",
      "@twice",
      "def sq(n):",
      "    return n * n",
      "",
      "for i in range(2):",
      "    print(sq(i + 1))",
    ].join("\n");
    const r = await d.run(code);
    assert.equal(r.status, "success", JSON.stringify(r));
    assert.equal(r.stdout, "2\n8\n");
  });
  await t.test("exception: status error, traceback on stderr without driver frames", async () => {
    const r = await d.run("def f():\n    return 1/0\nf()");
    assert.equal(r.status, "error");
    assert.equal(r.error.type, "ZeroDivisionError");
    assert.match(r.stderr, /ZeroDivisionError: division by zero/);
    assert.match(r.stderr, /return 1\/0/);
    assert.doesNotMatch(r.stderr, /python\.py/);
  });
  await t.test("syntax error", async () => {
    const r = await d.run("def (");
    assert.equal(r.status, "error");
    assert.equal(r.error.type, "SyntaxError");
  });
  await t.test("subprocess output is captured", async () => {
    const r = await d.run("import subprocess\nsubprocess.run(['echo', 'from child'])\nNone");
    assert.equal(r.stdout, "from child\n");
  });
  await t.test("SIGINT interrupts a busy loop and the driver keeps serving", async () => {
    const r = await d.run("while True:\n    pass", { interruptAfterMs: 300 });
    assert.equal(r.status, "error");
    assert.equal(r.error.type, "KeyboardInterrupt");
    assert.doesNotMatch(r.stderr, /python\.py/);
    assert.equal((await d.run("print(name)")).stdout, "World\n");
  });
  await t.test("top-level await", async () => {
    const r = await d.run("import asyncio\nawait asyncio.sleep(0.01)\nprint('awaited')");
    assert.equal(r.status, "success", JSON.stringify(r));
    assert.equal(r.stdout, "awaited\n");
  });
  await t.test("exit() ends the cell, not the session", async () => {
    const r = await d.run("exit(3)");
    assert.equal(r.status, "error");
    assert.equal(r.error.type, "SystemExit");
    assert.equal((await d.run("print(1)")).stdout, "1\n");
  });
  await t.test("closing fd 3 in user code does not cut the channel", async () => {
    await d.run("import os\ntry:\n    os.close(3)\nexcept OSError:\n    pass");
    assert.equal((await d.run("print(2)")).stdout, "2\n");
  });
  await d.close();
});

test("node driver", async (t) => {
  const d = new Driver(["node", "--expose-internals", path.join(replDir, "node.js")]);
  const ready = await d.next();
  assert.equal(ready.ready, true);
  assert.equal(ready.top_level_await, true);

  await t.test("state persists across cells", async () => {
    assert.equal((await d.run("var name = 'World'")).status, "success");
    const r = await d.run("console.log(`Hello ${name}!`)");
    assert.equal(r.stdout, "Hello World!\n");
  });
  await t.test("let/const/class/function persist and can be redeclared", async () => {
    await d.run("let a = 1; const b = 2; class K { v() { return 3 } } function f() { return 4 }");
    assert.equal((await d.run("console.log(a + b + new K().v() + f())")).stdout, "10\n");
    assert.equal((await d.run("let a = 5; a")).stdout, "5\n");
  });
  await t.test("trailing expression is shown, objects too", async () => {
    assert.equal((await d.run("1 + 1")).stdout, "2\n");
    assert.equal((await d.run("{ x: 1 }")).stdout, "{ x: 1 }\n");
  });
  await t.test("top-level await and values from promises", async () => {
    const r = await d.run("const v = await new Promise((r) => setTimeout(() => r(42), 20)); console.log(v)");
    assert.equal(r.status, "success", JSON.stringify(r));
    assert.equal(r.stdout, "42\n");
    assert.equal((await d.run("v + 1")).stdout, "43\n");
  });
  await t.test("output of short timers and promises settling within the call", async () => {
    const r = await d.run("setTimeout(() => console.log('later'), 100); Promise.resolve().then(() => console.log('micro')); undefined");
    assert.equal(r.stdout, "micro\nlater\n");
  });
  await t.test("console.error goes to stderr", async () => {
    assert.equal((await d.run("console.error('oops')")).stderr, "oops\n");
  });
  await t.test("thrown error", async () => {
    const r = await d.run("function boom() { throw new TypeError('bad') }\nboom()");
    assert.equal(r.status, "error");
    assert.equal(r.error.type, "TypeError");
    assert.match(r.stderr, /TypeError: bad/);
    assert.doesNotMatch(r.stderr, /node\.js:/);
  });
  await t.test("rejected promise", async () => {
    const r = await d.run("await Promise.reject(new RangeError('nope'))");
    assert.equal(r.status, "error");
    assert.equal(r.error.type, "RangeError");
  });
  await t.test("a failing cell still collects its short timers' output", async () => {
    const r = await d.run("setTimeout(() => console.log('timer'), 50); Promise.reject(new Error('nope'))");
    assert.equal(r.status, "error");
    assert.equal(r.stdout, "timer\n");
    assert.equal((await d.run("1")).stdout, "1\n");
  });
  await t.test("require works", async () => {
    assert.equal((await d.run("require('node:path').join('a', 'b')")).stdout, "'a/b'\n");
  });
  await t.test("SIGINT interrupts a busy loop and the driver keeps serving", async () => {
    const r = await d.run("while (true) {}", { interruptAfterMs: 300 });
    assert.equal(r.status, "error");
    assert.equal(r.error.type, "KeyboardInterrupt");
    assert.equal((await d.run("console.log(name)")).stdout, "World\n");
  });
  await t.test("SIGINT interrupts a pending await", async () => {
    const r = await d.run("await new Promise(() => {})", { interruptAfterMs: 300 });
    assert.equal(r.error.type, "KeyboardInterrupt");
    assert.equal((await d.run("1")).stdout, "1\n");
  });
  await d.close();
});
