import { Duplex } from "node:stream";
import { FrameDecoder, FrameKind, encodeFrame, type Frame } from "../frame.js";

/**
 * Two connected in-memory Duplex streams (a socketpair without the kernel): what one side
 * writes, the other reads.
 */
export function duplexPair(): [Duplex, Duplex] {
  const pair: { a?: Duplex; b?: Duplex } = {};
  const make = (peer: () => Duplex): Duplex =>
    new Duplex({
      read() {},
      write(chunk: Buffer, _enc, cb) {
        const p = peer();
        if (!p.destroyed) p.push(Buffer.from(chunk));
        cb();
      },
      final(cb) {
        peer().push(null);
        cb();
      },
      destroy(err, cb) {
        const p = peer();
        if (!p.destroyed) p.destroy();
        cb(err);
      },
    });
  const a = make(() => pair.b!);
  const b = make(() => pair.a!);
  pair.a = a;
  pair.b = b;
  return [a, b];
}

interface FakeProc {
  id: number;
  argv: string[];
  window: number;
  stdin: Buffer[];
  pending: Buffer[]; // output waiting for window
  onSignal?: (sig: string) => void;
  onCtrl?: (data: Buffer) => void;
  onStdinEof?: () => void;
  exited: boolean;
}

/**
 * A scripted guest agent speaking protocol v1, for unit tests of the host side. Commands:
 * `echo ARGS…`, `cat` (stdin to stdout), `yes N` (N bytes, window-respecting), `sleep`
 * (until signalled), `repl` (a fake REPL driver on the control channel: the cell `hang`
 * waits for SIGINT, `stuck` ignores it, `boom` fails, anything else is printed).
 */
export class FakeAgent {
  io: Duplex;
  readonly received: Frame[] = [];
  readonly #decoder = new FrameDecoder({ from: "host" });
  readonly #procs = new Map<number, FakeProc>();
  readonly files = new Map<string, Buffer>();
  #writes = new Map<number, { path: string; data: Buffer[] }>();
  windowBytes = 262_144;

  constructor(io: Duplex) {
    this.io = io;
    this.#attach(io);
  }

  #attach(io: Duplex): void {
    io.on("data", (chunk: Buffer) => {
      if (io !== this.io) return;
      for (const f of this.#decoder.push(chunk)) {
        this.received.push(f);
        this.#onFrame(f);
      }
    });
    io.on("error", () => undefined);
  }

  /**
   * A new host connection, as after a snapshot restore: running processes survive, their
   * windows restart, and HELLO lists their streams (what the real agent does).
   */
  reconnect(io: Duplex): void {
    this.io = io;
    this.#attach(io);
    for (const p of this.#procs.values()) {
      p.window = this.windowBytes;
      p.pending = [];
    }
    this.sendHello({ streams: [...this.#procs.keys()] });
  }

  sendHello(extra: Record<string, unknown> = {}): void {
    this.send(FrameKind.HELLO, 0, {
      protocol: 1,
      agent: "fake",
      max_frame_bytes: 1_048_576,
      window_bytes: this.windowBytes,
      ready: true,
      boot_ms: { kernel: 500, root: 10, agent: 20, total: 530 },
      boot_errors: [],
      boot_warnings: [],
      streams: [],
      ...extra,
    });
  }

  send(kind: number, stream: number, payload: unknown = Buffer.alloc(0)): void {
    const body = Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload));
    this.io.write(encodeFrame(kind as FrameKind, stream, body));
  }

  raw(bytes: Buffer): void {
    this.io.write(bytes);
  }

  #onFrame(f: Frame): void {
    switch (f.kind) {
      case FrameKind.REQUEST:
        this.#onRequest(f.stream, JSON.parse(f.payload.toString()) as Record<string, unknown>);
        return;
      case FrameKind.STDIN: {
        const w = this.#writes.get(f.stream);
        if (w) {
          w.data.push(f.payload);
          this.#window(f.stream, f.payload.length);
          return;
        }
        const p = this.#procs.get(f.stream);
        if (p?.argv[0] === "cat") {
          this.#window(f.stream, f.payload.length);
          this.#out(p, FrameKind.STDOUT, f.payload);
        }
        return;
      }
      case FrameKind.STDIN_EOF: {
        const w = this.#writes.get(f.stream);
        if (w) {
          this.#writes.delete(f.stream);
          const data = Buffer.concat(w.data);
          this.files.set(w.path, data);
          this.send(FrameKind.RESPONSE, f.stream, { bytes: data.length });
          return;
        }
        this.#procs.get(f.stream)?.onStdinEof?.();
        return;
      }
      case FrameKind.CTRL_IN:
        this.#window(f.stream, f.payload.length);
        this.#procs.get(f.stream)?.onCtrl?.(f.payload);
        return;
      case FrameKind.WINDOW: {
        const p = this.#procs.get(f.stream);
        if (!p) return;
        p.window += f.payload.readUInt32BE(0);
        this.#flush(p);
        return;
      }
      case FrameKind.HELLO:
      case FrameKind.RESPONSE:
      case FrameKind.STDOUT:
      case FrameKind.STDERR:
      case FrameKind.EXIT:
      case FrameKind.CTRL_OUT:
      case FrameKind.ERROR:
        return;
    }
  }

  #window(stream: number, n: number): void {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(n);
    this.send(FrameKind.WINDOW, stream, b);
  }

  #out(p: FakeProc, kind: number, data: Buffer): void {
    p.pending.push(Buffer.concat([Buffer.from([kind]), data]));
    this.#flush(p);
  }

  #flush(p: FakeProc): void {
    while (p.pending.length && p.window > 0) {
      const item = p.pending[0]!;
      const kind = item[0]!;
      const n = Math.min(item.length - 1, p.window, 65536);
      this.send(kind, p.id, item.subarray(1, 1 + n));
      p.window -= n;
      if (n === item.length - 1) p.pending.shift();
      else p.pending[0] = Buffer.concat([item.subarray(0, 1), item.subarray(1 + n)]);
    }
    if (p.exited && !p.pending.length) this.#procs.delete(p.id);
  }

  #exit(p: FakeProc, code: number, signal: number | null = null, timedOut = false): void {
    const finish = (): void => {
      if (p.pending.length) {
        setTimeout(finish, 1);
        return;
      }
      p.exited = true;
      this.#procs.delete(p.id);
      this.send(FrameKind.EXIT, p.id, {
        exit_code: signal ? 128 + signal : code,
        signal,
        timed_out: timedOut,
        duration_ms: 1,
        oom_killed: false,
      });
    };
    finish();
  }

  #onRequest(id: number, req: Record<string, unknown>): void {
    const op = req.op;
    switch (op) {
      case "ping":
        this.send(FrameKind.RESPONSE, id, { pong: true, uptime_ms: 1234 });
        return;
      case "metrics":
        this.send(FrameKind.RESPONSE, id, {
          cpu_pct: 12.5,
          mem_total_bytes: 100,
          mem_used_bytes: 40,
          disk_total_bytes: 1000,
          disk_used_bytes: 10,
          procs: 3,
        });
        return;
      case "configure":
        this.send(FrameKind.RESPONSE, id, { errors: [] });
        return;
      case "shutdown":
        this.send(FrameKind.RESPONSE, id, { ok: true });
        return;
      case "read_file": {
        const data = this.files.get(String(req.path));
        if (!data) {
          this.send(FrameKind.RESPONSE, id, {
            error: { code: "not_found", message: `cannot read ${String(req.path)}` },
          });
          return;
        }
        const max = Number(req.max_bytes);
        const part = data.subarray(0, max);
        for (let off = 0; off < part.length; off += 65536)
          this.send(FrameKind.STDOUT, id, part.subarray(off, off + 65536));
        this.send(FrameKind.RESPONSE, id, {
          bytes: part.length,
          size: data.length,
          truncated: part.length < data.length,
        });
        return;
      }
      case "write_file":
        this.#writes.set(id, { path: String(req.path), data: [] });
        return;
      case "list_dir":
        this.send(FrameKind.RESPONSE, id, {
          entries: [{ name: "a.txt", type: "file", size: 3, mode: 0o644, mtime_ms: 1 }],
          truncated: false,
        });
        return;
      case "signal": {
        const p = this.#procs.get(Number(req.stream));
        if (!p) {
          this.send(FrameKind.RESPONSE, id, {
            error: { code: "no_such_stream", message: "no such stream" },
          });
          return;
        }
        this.send(FrameKind.RESPONSE, id, { ok: true });
        p.onSignal?.(String(req.signal));
        return;
      }
      case "exec":
        this.#exec(id, req);
        return;
      default:
        this.send(FrameKind.RESPONSE, id, {
          error: { code: "unknown_op", message: `unknown op ${String(op)}` },
        });
    }
  }

  #exec(id: number, req: Record<string, unknown>): void {
    const argv = req.argv as string[];
    const known = ["echo", "cat", "yes", "sleep", "repl", "silent-repl"];
    if (!known.includes(argv[0]!)) {
      this.send(FrameKind.RESPONSE, id, {
        error: { code: "not_found", message: `${argv[0]}: command not found` },
      });
      return;
    }
    const p: FakeProc = {
      id,
      argv,
      window: this.windowBytes,
      stdin: [],
      pending: [],
      exited: false,
    };
    this.#procs.set(id, p);
    this.send(FrameKind.RESPONSE, id, { pid: 100 + id });
    const killedBy = (sig: string): number | null =>
      sig === "SIGKILL" ? 9 : sig === "SIGINT" ? 2 : sig === "SIGTERM" ? 15 : null;
    const command: string = argv[0] ?? "";
    switch (command) {
      case "echo":
        this.#out(p, FrameKind.STDOUT, Buffer.from(`${argv.slice(1).join(" ")}\n`));
        this.#out(p, FrameKind.STDERR, Buffer.from("to stderr\n"));
        this.#exit(p, 0);
        return;
      case "cat":
        p.onStdinEof = () => this.#exit(p, 0);
        return;
      case "yes":
        this.#out(p, FrameKind.STDOUT, Buffer.alloc(Number(argv[1]), 0x79));
        this.#exit(p, 0);
        return;
      case "sleep":
        p.onSignal = (sig) => {
          const s = killedBy(sig);
          if (s) this.#exit(p, 0, s);
        };
        return;
      case "repl":
      case "silent-repl": {
        if (argv[0] === "repl")
          this.send(FrameKind.CTRL_OUT, id, Buffer.from('{"ready":true,"language":"fake"}\n'));
        let buf = "";
        let hanging: { id: unknown; stuck: boolean } | undefined;
        p.onCtrl = (data) => {
          buf += data.toString();
          let nl;
          while ((nl = buf.indexOf("\n")) >= 0) {
            const msg = JSON.parse(buf.slice(0, nl)) as { id: unknown; code: string };
            buf = buf.slice(nl + 1);
            if (msg.code === "hang" || msg.code === "stuck") {
              hanging = { id: msg.id, stuck: msg.code === "stuck" };
            } else if (msg.code === "boom") {
              this.#out(p, FrameKind.STDERR, Buffer.from("Traceback: boom\n"));
              this.send(
                FrameKind.CTRL_OUT,
                id,
                Buffer.from(
                  `${JSON.stringify({ id: msg.id, status: "error", error: { type: "ValueError", message: "boom", traceback: "Traceback: boom\n" } })}\n`,
                ),
              );
            } else if (msg.code === "die") {
              this.#exit(p, 0, 9);
            } else {
              this.#out(p, FrameKind.STDOUT, Buffer.from(msg.code));
              this.send(
                FrameKind.CTRL_OUT,
                id,
                Buffer.from(`${JSON.stringify({ id: msg.id, status: "success" })}\n`),
              );
            }
          }
        };
        p.onSignal = (sig) => {
          if (sig === "SIGKILL") {
            this.#exit(p, 0, 9);
            return;
          }
          if (sig === "SIGINT" && hanging && !hanging.stuck) {
            const h = hanging;
            hanging = undefined;
            this.send(
              FrameKind.CTRL_OUT,
              id,
              Buffer.from(
                `${JSON.stringify({ id: h.id, status: "error", error: { type: "KeyboardInterrupt", message: "", traceback: "KeyboardInterrupt\n" } })}\n`,
              ),
            );
          }
        };
        return;
      }
      default:
        return;
    }
  }
}
