import { createConnection, type Socket } from "node:net";
import { MsbError } from "@msb/errors";

/** Lines QEMU may send are small; anything longer than this is a broken peer. */
const MAX_LINE_BYTES = 1024 * 1024;

/** A QMP connection (QEMU Machine Protocol, JSON lines over a unix socket). */
export interface QmpClient {
  /** Runs one command; resolves with its `return` value, rejects with its `error`. */
  execute(command: string, args?: Record<string, unknown>): Promise<unknown>;
  close(): void;
}

function qmpError(message: string, cause?: unknown): MsbError {
  return new MsbError("VM_DIED", `QEMU's control socket failed: ${message}.`, {
    ...(cause === undefined ? {} : { cause }),
  });
}

/**
 * Connects to QEMU's QMP socket and negotiates capabilities. The connection is closed when
 * `signal` aborts; every pending command then rejects.
 */
export async function connectQmp(path: string, signal: AbortSignal): Promise<QmpClient> {
  const socket: Socket = createConnection({ path });
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let buffered = "";
  let greeted: (() => void) | undefined;
  let failure: Error | undefined;

  const failAll = (err: Error): void => {
    failure ??= err;
    for (const p of pending.values()) p.reject(err);
    pending.clear();
    socket.destroy();
  };
  const onAbort = (): void => failAll(qmpError("cancelled", signal.reason));
  signal.addEventListener("abort", onAbort, { once: true });
  socket.on("close", () => {
    signal.removeEventListener("abort", onAbort);
    failAll(qmpError("connection closed"));
  });
  socket.on("error", (err) => failAll(qmpError(err.message, err)));
  socket.setEncoding("utf8");
  socket.on("data", (chunk: string) => {
    buffered += chunk;
    if (buffered.length > MAX_LINE_BYTES) {
      failAll(qmpError("oversize message"));
      return;
    }
    let nl: number;
    while ((nl = buffered.indexOf("\n")) >= 0) {
      const line = buffered.slice(0, nl).trim();
      buffered = buffered.slice(nl + 1);
      if (line.length === 0) continue;
      let msg: Record<string, unknown>;
      try {
        msg = JSON.parse(line) as Record<string, unknown>;
      } catch {
        failAll(qmpError("invalid JSON"));
        return;
      }
      if ("QMP" in msg) {
        greeted?.();
        continue;
      }
      if (typeof msg["id"] !== "number") continue; // events
      const waiter = pending.get(msg["id"]);
      if (waiter === undefined) continue;
      pending.delete(msg["id"]);
      if ("error" in msg) {
        const e = msg["error"] as { desc?: unknown };
        waiter.reject(qmpError(typeof e.desc === "string" ? e.desc : "command failed"));
      } else {
        waiter.resolve(msg["return"]);
      }
    }
  });

  await new Promise<void>((resolve, reject) => {
    greeted = resolve;
    socket.once("close", () => reject(failure ?? qmpError("connection closed")));
  });

  const client: QmpClient = {
    execute(command, args) {
      if (failure !== undefined) return Promise.reject(failure);
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        socket.write(
          `${JSON.stringify({ execute: command, ...(args ? { arguments: args } : {}), id })}\n`,
        );
      });
    },
    close() {
      socket.destroy();
    },
  };
  await client.execute("qmp_capabilities");
  return client;
}
