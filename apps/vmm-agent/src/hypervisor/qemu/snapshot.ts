import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { lchown, rename, rm } from "node:fs/promises";
import { createServer, type Socket } from "node:net";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { MsbError } from "@msb/errors";
import { TEMP_FILE_MARKER } from "../../supervision/vm-files.js";
import { connectQmp, type QmpClient } from "./qmp.js";

/**
 * QEMU snapshots as migrations to and from a file, with guest RAM left out: RAM lives in a
 * `memory-backend-file` and `x-ignore-shared` makes QEMU skip it, so the state file holds
 * only device state (tens of KiB) and a clone maps the RAM file instead of reading it.
 *
 * No `exec:` URIs (QEMU's `-sandbox spawn=deny` forbids them). Outgoing, QEMU 7.2 accepts a
 * named fd (`getfd`, which needs SCM_RIGHTS that Node's net module cannot send) or a socket:
 * QEMU connects to a unix socket the host listens on in the VM's own directory and the host
 * writes what arrives to the state file. Incoming, the state file is an inherited fd
 * (`-incoming defer`, then `migrate-incoming fd:N`: a numeric fd is accepted there).
 */

const IGNORE_SHARED = [{ capability: "x-ignore-shared", state: true }];

/** Polling period of `query-migrate`; a snapshot without RAM takes a few ms. */
const POLL_MS = 5;

function snapshotError(message: string, cause?: unknown): MsbError {
  return new MsbError("VM_BOOT_FAILED", `Snapshot failed: ${message}`, {
    ...(cause === undefined ? {} : { cause }),
  });
}

/**
 * Connects to a QMP socket that QEMU may not have created yet (right after spawn); retries
 * until `signal` aborts.
 */
export async function connectQmpWhenReady(path: string, signal: AbortSignal): Promise<QmpClient> {
  for (;;) {
    try {
      return await connectQmp(path, signal);
    } catch (err) {
      if (signal.aborted) throw err;
      await sleep(POLL_MS);
    }
  }
}

/**
 * Saves the device state of a running VM whose RAM is a shared memory file to `statePath`
 * (atomically), and leaves the VM paused as migration does. `socketPath` is a unix socket
 * path the host may create (in the VM's directory); `owner` is the QEMU's uid and gid when it
 * runs as a user of its own, which needs write permission on the socket to connect.
 */
export async function saveSnapshot(
  qmpSocketPath: string,
  socketPath: string,
  statePath: string,
  owner: { readonly uid: number; readonly gid: number } | undefined,
  signal: AbortSignal,
): Promise<void> {
  const tmp = `${statePath}${TEMP_FILE_MARKER}${randomBytes(4).toString("hex")}`;
  await rm(socketPath, { force: true });
  let received: Promise<void> | undefined;
  const server = createServer((socket: Socket) => {
    server.close(); // one migration stream
    received ??= pipeline(socket, createWriteStream(tmp, { mode: 0o600 }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, () => resolve());
  });
  let qmp: QmpClient | undefined;
  try {
    if (owner !== undefined) await lchown(socketPath, owner.uid, owner.gid);
    qmp = await connectQmp(qmpSocketPath, signal);
    await qmp.execute("migrate-set-capabilities", { capabilities: IGNORE_SHARED });
    await qmp.execute("migrate", { uri: `unix:${socketPath}` });
    for (;;) {
      const r = (await qmp.execute("query-migrate")) as {
        status?: string;
        "error-desc"?: string;
      };
      if (r.status === "completed") break;
      if (r.status === "failed" || r.status === "cancelled") {
        throw snapshotError(`QEMU reported ${r.status}: ${r["error-desc"] ?? "no reason given"}.`);
      }
      if (signal.aborted) throw snapshotError("cancelled.", signal.reason);
      await sleep(POLL_MS);
    }
    if (received === undefined) throw snapshotError("QEMU never connected to the state socket.");
    await received;
    await rename(tmp, statePath);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  } finally {
    qmp?.close();
    server.close();
    await rm(socketPath, { force: true });
  }
}

/**
 * Starts loading a snapshot into a QEMU started with `-incoming defer` and the state file on
 * inherited fd `fd`; the guest runs by itself once the load completes (a failed load makes
 * QEMU exit with the reason on its stderr).
 */
export async function startIncoming(
  qmpSocketPath: string,
  fd: number,
  signal: AbortSignal,
): Promise<void> {
  const qmp = await connectQmpWhenReady(qmpSocketPath, signal);
  try {
    await qmp.execute("migrate-set-capabilities", { capabilities: IGNORE_SHARED });
    await qmp.execute("migrate-incoming", { uri: `fd:${fd}` });
  } finally {
    qmp.close();
  }
}

/** Runs one QMP command on a fresh connection (pause, resume, port forwards). */
export async function qmpCommand(
  qmpSocketPath: string,
  command: string,
  args: Record<string, unknown> | undefined,
  signal: AbortSignal,
): Promise<unknown> {
  const qmp = await connectQmp(qmpSocketPath, signal);
  try {
    return await qmp.execute(command, args);
  } finally {
    qmp.close();
  }
}
