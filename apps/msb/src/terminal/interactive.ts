import { MsbError } from "@msb/errors";
import { openAttach, type AttachConnection, type AttachStart } from "../client/attach.js";
import type { ServerTarget } from "../project/remote.js";

/** The local ends of a session: the CLI's own stdin/stdout/stderr in production. */
export interface LocalTerminal {
  readonly stdin: NodeJS.ReadStream;
  readonly stdout: NodeJS.WriteStream;
  readonly stderr: NodeJS.WriteStream;
}

export interface InteractiveOptions {
  readonly target: ServerTarget;
  readonly sandbox: string;
  readonly namespace: string;
  /** The sandbox's shell, e.g. /bin/sh. */
  readonly shell: string;
  /** Run this instead of an interactive shell (`SHELL -c COMMAND`). */
  readonly command?: string;
  readonly terminal: LocalTerminal;
}

/** Size used when stdout is not a terminal (e.g. `msb shell app > log` from a terminal). */
const DEFAULT_SIZE = { rows: 24, cols: 80 };

/** The session's mode: a real terminal when stdin is one, else pipes. */
export function sessionMode(stdin: { readonly isTTY?: boolean }): "pty" | "pipe" {
  return stdin.isTTY === true ? "pty" : "pipe";
}

/** The `start` message for a shell session. */
export function shellStart(
  options: Omit<InteractiveOptions, "terminal" | "target">,
  mode: "pty" | "pipe",
  size: { rows: number; cols: number },
  term: string | undefined,
): AttachStart {
  return {
    sandbox: options.sandbox,
    namespace: options.namespace,
    command: options.shell,
    args: options.command === undefined ? [] : ["-c", options.command],
    ...(mode === "pty"
      ? { pty: size, env: [`TERM=${term === undefined || term === "" ? "xterm-256color" : term}`] }
      : {}),
  };
}

function sizeOf(stdout: NodeJS.WriteStream): { rows: number; cols: number } {
  return stdout.isTTY && stdout.rows > 0 && stdout.columns > 0
    ? { rows: stdout.rows, cols: stdout.columns }
    : DEFAULT_SIZE;
}

/**
 * Runs a shell (or `command`) in the sandbox attached to the local terminal and resolves to
 * its exit code.
 *
 * - stdin is a TTY: raw mode, a pty of the local size in the guest, SIGWINCH → resize;
 *   Ctrl-C, Ctrl-D, Ctrl-Z travel as bytes and the guest's line discipline acts on them.
 * - otherwise: pipes; stdin is forwarded with back-pressure and its end closes the guest's
 *   stdin; SIGINT is forwarded as SIGINT to the guest's process group.
 *
 * SIGTERM and SIGHUP (and a second SIGINT in pipe mode) end the session: the server kills the
 * process and this resolves to 130. The terminal is restored on every path, including an
 * uncaught exit of the CLI.
 */
export async function runInteractive(options: InteractiveOptions): Promise<number> {
  const { stdin, stdout, stderr } = options.terminal;
  const mode = sessionMode(stdin);
  const conn: AttachConnection = openAttach(
    options.target,
    shellStart(options, mode, sizeOf(stdout), process.env["TERM"]),
    { stdout, stderr },
  );

  let interrupted = false;
  let sigints = 0;
  const endSession = (): void => {
    interrupted = true;
    conn.close();
  };
  const onSigint = (): void => {
    // Only reachable in pipe mode or via kill(1): in raw mode Ctrl-C is a byte, not a signal.
    sigints += 1;
    if (mode === "pipe" && sigints === 1) conn.signal("SIGINT");
    else endSession();
  };
  const onResize = (): void => {
    const size = sizeOf(stdout);
    conn.resize(size.rows, size.cols);
  };

  let reading = true;
  const onData = (chunk: Buffer): void => {
    if (!reading) return;
    if (mode === "pty") {
      void conn.write(chunk);
      return;
    }
    stdin.pause();
    void conn.write(chunk).then(() => {
      if (reading) stdin.resume();
    });
  };
  const onEnd = (): void => conn.eof();

  const raw = mode === "pty" && typeof stdin.setRawMode === "function";
  const restoreSync = (): void => {
    if (raw && stdin.isRaw) stdin.setRawMode(false);
  };
  process.on("exit", restoreSync);
  process.on("SIGINT", onSigint);
  process.on("SIGTERM", endSession);
  process.on("SIGHUP", endSession);
  try {
    if (raw) stdin.setRawMode(true);
    if (mode === "pty") stdout.on("resize", onResize);
    stdin.on("data", onData);
    stdin.on("end", onEnd);
    stdin.resume();
    const exit = await conn.done;
    return exit.exitCode;
  } catch (err) {
    if (interrupted && err instanceof MsbError && err.code === "CANCELLED") return 130;
    throw err;
  } finally {
    reading = false;
    stdin.off("data", onData);
    stdin.off("end", onEnd);
    stdout.off("resize", onResize);
    restoreSync();
    stdin.pause();
    process.off("exit", restoreSync);
    process.off("SIGINT", onSigint);
    process.off("SIGTERM", endSession);
    process.off("SIGHUP", endSession);
  }
}
