import { spawn, type ChildProcess } from "node:child_process";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  MSB,
  msb,
  processesMentioning,
  rpc,
  startDevServer,
  stopForeground,
  tempHome,
  type ForegroundServer,
} from "../server/harness.js";

/** A CLI process the test talks to while it runs. */
interface Live {
  readonly child: ChildProcess;
  readonly out: { stdout: string; stderr: string };
  /** Resolves once `pattern` is in the stream; rejects if the process exits first. */
  waitFor(pattern: RegExp, stream?: "stdout" | "stderr"): Promise<void>;
  readonly exited: Promise<number | null>;
}

function live(argv: readonly string[], env: NodeJS.ProcessEnv): Live {
  const child = spawn(argv[0]!, argv.slice(1), {
    env: { ...process.env, ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  const out = { stdout: "", stderr: "" };
  const waiters: (() => void)[] = [];
  const wake = (): void => {
    for (const w of waiters.splice(0)) w();
  };
  child.stdout.on("data", (c: Buffer) => {
    out.stdout += c.toString();
    wake();
  });
  child.stderr.on("data", (c: Buffer) => {
    out.stderr += c.toString();
    wake();
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once("exit", (code, signal) => {
      resolve(code ?? (signal === null ? null : 128));
      wake();
    }),
  );
  let done = false;
  void exited.then(() => (done = true));
  return {
    child,
    out,
    exited,
    async waitFor(pattern, stream = "stdout") {
      for (;;) {
        if (pattern.test(out[stream])) return;
        if (done) {
          throw new Error(
            `exited before ${String(pattern)} on ${stream}.\nstdout: ${out.stdout}\nstderr: ${out.stderr}`,
          );
        }
        await new Promise<void>((resolve) => waiters.push(resolve));
      }
    },
  };
}

/** The pty (/dev/pts/N) a process of `root`'s tree has as stdin, once it exists. */
function ptyOfDescendant(root: number, needle: string): string | undefined {
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    try {
      // argv entries are NUL-separated: this matches the CLI, not script's or sh's one-string -c.
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
      if (cmdline.includes(`\0${needle}\0`)) return readlinkSync(`/proc/${pid}/fd/0`);
      for (const task of [pid]) {
        const children = readFileSync(`/proc/${pid}/task/${task}/children`, "utf8").trim();
        if (children !== "") queue.push(...children.split(/\s+/).map(Number));
      }
    } catch {
      // Gone meanwhile.
    }
  }
  return undefined;
}

const quote = (s: string): string => `'${s.replace(/'/g, "'\\''")}'`;

// msb shell / run / exe / apply / up as a user runs them: the built CLI against
// `msb server start --dev` with real VMs; `shell` through a real pseudo-terminal (script(1)).
describe("msb shell, run, exe, apply, up (real server, real VMs)", () => {
  const home = tempHome();
  const project = mkdtempSync(join(tmpdir(), "msb-e2e-shell-"));
  const file = join(project, "Sandboxfile");
  let server: ForegroundServer;
  let url = "";
  const env = (): NodeJS.ProcessEnv => ({ MSB_SERVER_URL: url });
  const cli = (args: readonly string[]) => msb(home.path, args, env());
  const msbArgv = (args: readonly string[]) => [
    process.execPath,
    MSB,
    "--home",
    home.path,
    ...args,
  ];

  beforeAll(async () => {
    ({ server, url } = await startDevServer(home.path));
    expect((await cli(["init", "--file", project])).code).toBe(0);
    const add = await cli([
      "add",
      "app",
      "--file",
      project,
      "--image",
      "microsandbox/python",
      "--script",
      // Prints a line, then waits for the test to create /tmp/go: only live output lets the
      // test see the first line and create the file.
      "live=echo first; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo second >&2; echo third; exit 5",
    ]);
    expect(add.code, add.stderr).toBe(0);
  }, 600_000);

  afterAll(async () => {
    await stopForeground(server);
    home.remove();
    rmSync(project, { recursive: true, force: true });
  });

  it("shell on a terminal: a pty of the window's size, resize, Ctrl-C, exit code, terminal restored", async () => {
    const inner = [
      "stty rows 33 cols 101",
      `${msbArgv(["shell", "app", "--file", project]).map(quote).join(" ")}`,
      'echo "msb-exit=$?"',
      "stty -a",
    ].join("; ");
    const session = live(["script", "-qfec", inner, "/dev/null"], env());
    // The guest shell's prompt (`# ` for root) is the first output: the sandbox starts first.
    await session.waitFor(/[#$] $/);
    session.child.stdin!.write("stty size\r");
    await session.waitFor(/33 101/);
    session.child.stdin!.write("echo h''i\r");
    await session.waitFor(/\bhi\r*\n/);

    // SIGWINCH: the kernel signals the terminal's foreground group when its size changes.
    const pts = ptyOfDescendant(session.child.pid!, "shell");
    expect(pts).toMatch(/^\/dev\/pts\/\d+$/);
    const resize = spawn("stty", ["-F", pts!, "rows", "40", "cols", "120"], { stdio: "ignore" });
    expect(await new Promise((r) => resize.once("exit", r))).toBe(0);
    session.child.stdin!.write("stty size\r");
    await session.waitFor(/40 120/);

    // Ctrl-C is a byte: the guest's line discipline interrupts `sleep`, the shell stays.
    session.child.stdin!.write("echo sl''eeping; sleep 100000\r");
    await session.waitFor(/\bsleeping\r*\n/);
    session.child.stdin!.write("\x03");
    session.child.stdin!.write("echo af''ter\r");
    await session.waitFor(/\bafter\r*\n/);

    session.child.stdin!.write("exit 3\r");
    await session.waitFor(/msb-exit=3/);
    await session.exited;
    // After msb: the same terminal is back in cooked mode with echo.
    const after = session.out.stdout.slice(session.out.stdout.indexOf("msb-exit=3"));
    expect(after).toMatch(/(^|\s)icanon\b/);
    expect(after).toMatch(/(^|\s)echo\b/);
    expect(after).not.toMatch(/-icanon\b/);
  }, 900_000);

  it("shell with piped stdin: no pty, stdout and stderr apart, exit code passed on", async () => {
    const session = live(msbArgv(["shell", "app", "--file", project]), env());
    session.child.stdin!.end("echo hi; echo oops >&2; test -t 0 || echo no-tty; exit 4\n");
    expect(await session.exited).toBe(4);
    expect(session.out.stdout).toBe("hi\nno-tty\n");
    expect(session.out.stderr).toBe("oops\n");
  }, 600_000);

  it("run prints output as it is produced, stderr apart, and exits with the script's code", async () => {
    const run = live(msbArgv(["run", "app~live", "--file", project]), env());
    await run.waitFor(/^first\n/);
    const go = await rpc(url, "sandbox.command.run", {
      sandbox: "app",
      command: "touch",
      args: ["/tmp/go"],
    });
    expect(go.status).toBe(200);
    expect(await run.exited).toBe(5);
    expect(run.out.stdout).toBe("first\nthird\n");
    expect(run.out.stderr).toBe("second\n");
  }, 600_000);

  it("exe prints 42; exe deletes its sandbox, also on SIGINT or SIGTERM (exit 130)", async () => {
    const exeSandboxes = async (): Promise<string[]> => {
      const all = await rpc(url, "sandbox.metrics.get", { namespace: "default" });
      return (all.body["result"] as { sandboxes: { name: string }[] }).sandboxes
        .map((s) => s.name)
        .filter((n) => n.startsWith("exe-"));
    };
    const exeDirs = (): string[] => {
      const dir = join(home.path, "sandboxes", "default");
      return existsSync(dir) ? readdirSync(dir).filter((n) => n.startsWith("exe-")) : [];
    };
    const exe = await cli(["exe", "microsandbox/python", "--", "python3", "-c", "print(6*7)"]);
    expect(exe.code, exe.stderr).toBe(0);
    expect(exe.stdout).toBe("42\n");
    // Neither a record nor a scratch disk is left behind.
    expect(await exeSandboxes()).toEqual([]);
    expect(exeDirs()).toEqual([]);

    for (const sig of ["SIGINT", "SIGTERM"] as const) {
      const long = live(
        msbArgv(["exe", "microsandbox/python", "--", "sh", "-c", "echo ready; sleep 100000"]),
        env(),
      );
      await long.waitFor(/ready\n/);
      const metrics = await rpc(url, "sandbox.metrics.get", { namespace: "default" });
      const running = (
        metrics.body["result"] as { sandboxes: { name: string; running: boolean }[] }
      ).sandboxes.filter((s) => s.name.startsWith("exe-") && s.running);
      expect(running).toHaveLength(1);
      const name = running[0]!.name;
      // The VM's QEMU, by the pidfile in the sandbox's directory (a VM claimed from the warm
      // pool was started under the pool's directory, so its argv does not name the sandbox).
      const pidfile = join(home.path, "sandboxes", "default", name, "qemu.pid");
      const qemuPid = Number(readFileSync(pidfile, "utf8").trim());
      expect(isAlive(qemuPid)).toBe(true);
      long.child.kill(sig);
      expect(await long.exited).toBe(130);
      const after = await rpc(url, "sandbox.metrics.get", { namespace: "default", sandbox: name });
      expect(after.body).toMatchObject({ error: { data: { code: "SANDBOX_NOT_FOUND" } } });
      expect(existsSync(join(home.path, "sandboxes", "default", name))).toBe(false);
      // QEMU of that sandbox is gone.
      expect(isAlive(qemuPid)).toBe(false);
      expect(processesMentioning(`default/${name}`)).toEqual([]);
    }
  }, 900_000);

  it("apply restarts the changed sandbox and starts the new one; foreground up prints logs until Ctrl-C", async () => {
    const add = await cli([
      "add",
      "web",
      "--file",
      project,
      "--image",
      "microsandbox/python",
      "--env",
      "COLOR=red",
      "--script",
      "start=echo color-$COLOR; sleep 100000",
    ]);
    expect(add.code, add.stderr).toBe(0);
    const first = await cli(["apply", "--detach", "--file", project]);
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain("web: start");

    writeFileSync(file, readFileSync(file, "utf8").replace("COLOR=red", "COLOR=blue"));
    const add2 = await cli([
      "add",
      "worker",
      "--file",
      project,
      "--image",
      "microsandbox/python",
      "--script",
      "start=echo worker-up; sleep 100000",
    ]);
    expect(add2.code, add2.stderr).toBe(0);
    const second = await cli(["apply", "--detach", "--file", project]);
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toMatch(/web: stop \(configuration changed\)/);
    expect(second.stdout).toMatch(/worker: start/);
    const color = await rpc(url, "sandbox.command.run", {
      sandbox: "web",
      command: "sh",
      args: ["-c", "echo $COLOR"],
    });
    expect(color.body).toMatchObject({ result: { output: [{ text: "blue" }] } });

    const down = await cli(["down", "--file", project]);
    expect(down.code, down.stderr).toBe(0);

    // Foreground up: starts, follows the start script's log, and stops on Ctrl-C.
    const up = live(msbArgv(["up", "worker", "--file", project]), env());
    await up.waitFor(/worker-up\n/);
    up.child.kill("SIGINT");
    expect(await up.exited).toBe(130);
    const metrics = await rpc(url, "sandbox.metrics.get", {
      namespace: "default",
      sandbox: "worker",
    });
    expect(metrics.body).toMatchObject({
      result: { sandboxes: [{ name: "worker", running: false }] },
    });
  }, 1_800_000);
});

/** True while a process with this pid exists (signal 0 probes without signalling). */
function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
