import { execFile, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { accessSync, constants } from "node:fs";
import { lchown, mkdir, open, rename, rm, writeFile, type FileHandle } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { delimiter, join } from "node:path";
import { promisify } from "node:util";
import { MsbError } from "@msb/errors";
import type { Logger } from "@msb/runtime";
import { createConsoleRecorder } from "../../supervision/console-log.js";
import { readHostRssBytes } from "../../supervision/process-table.js";
import { TEMP_FILE_MARKER, VM_FILES } from "../../supervision/vm-files.js";
import { describeExit } from "../exit.js";
import type { ExitInfo, Hypervisor, LaunchSpec, VmProcess } from "../hypervisor.js";
import { buildQemuArgs } from "./command-line.js";
import { openInheritedFiles } from "./inherited-files.js";
import { connectQmp } from "./qmp.js";
import { launcherCommand } from "./sandboxing.js";
import { qmpCommand, saveSnapshot, startIncoming } from "./snapshot.js";

/** Deadline of handing a snapshot to a restoring QEMU (QMP up + migrate-incoming). */
const INCOMING_TIMEOUT_MS = 30_000;

export interface QemuHypervisorOptions {
  readonly qemuBinary: string;
  readonly tcgTbSizeMib: number;
  readonly consoleLogMaxBytes: number;
  /** QEMU's seccomp filter; see sandboxing.ts. */
  readonly seccomp: boolean;
  readonly logger: Logger;
}

/** Finds an executable on PATH (or checks an explicit path). */
export function findExecutable(name: string): string | undefined {
  const candidates = name.includes("/")
    ? [name]
    : (process.env["PATH"] ?? "/usr/bin:/bin").split(delimiter).map((d) => join(d, name));
  for (const file of candidates) {
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // try the next one
    }
  }
  return undefined;
}

/** Writes a file atomically: temp file in the same directory, then rename. */
async function writeAtomic(path: string, data: string): Promise<void> {
  const tmp = `${path}${TEMP_FILE_MARKER}${randomBytes(4).toString("hex")}`;
  // wx: never through a file (or symlink) someone put there first; the VM's uid owns the dir.
  await writeFile(tmp, data, { mode: 0o600, flag: "wx" });
  await rename(tmp, path);
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(path, () => {
      server.off("error", reject);
      resolve();
    });
  });
}

/**
 * The QEMU backend: `qemu-system-x86_64 -M microvm`, one process per VM, started through
 * `setpriv --pdeathsig KILL` in its own process group so that it dies with the vmm-agent
 * (even on SIGKILL) but not with a Ctrl-C aimed at the vmm-agent's terminal.
 */
export function createQemuHypervisor(options: QemuHypervisorOptions): Hypervisor {
  const { logger } = options;
  const setpriv = findExecutable("setpriv");
  if (setpriv === undefined) {
    logger.warn(
      "setpriv (util-linux) not found: QEMU processes will not die with the vmm-agent; leftovers are reaped at the next start",
    );
  }
  const qemuBinary = findExecutable(options.qemuBinary);

  async function launch(spec: LaunchSpec): Promise<VmProcess> {
    if (qemuBinary === undefined) {
      throw new MsbError(
        "VM_BOOT_FAILED",
        `QEMU (${options.qemuBinary}) is not installed. Install Debian's qemu-system-x86 package or set MSB_QEMU.`,
      );
    }
    await mkdir(spec.dir, { recursive: true, mode: 0o700 });
    // `let`: a pooled VM's directory is renamed to its sandbox's when it is claimed.
    let dir = spec.dir;
    let agentSocketPath = join(dir, VM_FILES.agentSocket);
    let qmpSocketPath = join(dir, VM_FILES.qmpSocket);
    let pidfilePath = join(dir, VM_FILES.pidfile);
    await rm(agentSocketPath, { force: true });
    await rm(qmpSocketPath, { force: true });

    // Kernel, initramfs, image and volumes reach QEMU as descriptors the vmm-agent opened:
    // an unprivileged QEMU needs no right on them or their directories (e.g. a 0700 home).
    const inherited = await openInheritedFiles(spec);
    let args: string[];
    try {
      args = buildQemuArgs({
        accelerator: spec.accelerator,
        tcgTbSizeMib: options.tcgTbSizeMib,
        memoryMib: spec.memoryMib,
        vcpus: spec.vcpus,
        kernelPath: inherited.kernelPath,
        initramfsPath: inherited.initramfsPath,
        ...(inherited.rootfsPath === undefined ? {} : { rootfsPath: inherited.rootfsPath }),
        ...(spec.scratchDiskPath === undefined ? {} : { scratchDiskPath: spec.scratchDiskPath }),
        agentSocketPath,
        qmpSocketPath,
        ...(spec.network === undefined ? {} : { network: spec.network }),
        volumes: inherited.volumes,
        seccomp: options.seccomp,
        fdSets: inherited.fdSets,
        ...(spec.memoryFile === undefined ? {} : { memoryFile: spec.memoryFile }),
        incoming: spec.restoreStatePath !== undefined,
      });
    } catch (err) {
      await inherited.close();
      throw err;
    }

    // The host listens and QEMU connects: the guest's first bytes (HELLO) cannot be missed.
    let agentSocket: Socket | undefined;
    let agentWaiter: ((socket: Socket) => void) | undefined;
    const server = createServer({ allowHalfOpen: false }, (socket) => {
      if (agentSocket !== undefined) {
        socket.destroy();
        return;
      }
      agentSocket = socket;
      // One connection per VM: nobody else may attach, and no socket file outlives the need.
      server.close();
      void rm(agentSocketPath, { force: true });
      agentWaiter?.(socket);
    });
    try {
      await listen(server, agentSocketPath);
      // QEMU connects as the VM's uid: the socket (in the VM's 0700 directory) is its own.
      if (spec.credentials !== undefined) {
        await lchown(agentSocketPath, spec.credentials.uid, spec.credentials.gid);
      }
    } catch (err) {
      server.close();
      await inherited.close();
      throw err;
    }

    const consoleLog = createConsoleRecorder(
      join(spec.dir, VM_FILES.consoleLog),
      options.consoleLogMaxBytes,
    );
    let command: string;
    let argv: string[];
    // A restore reads its state from an inherited fd after the others (kernel, initramfs,
    // image, volumes): no path for QEMU to open, no exec: URI.
    let state: FileHandle | undefined;
    try {
      [command, argv] = launcherCommand(setpriv, spec.credentials, qemuBinary, args);
      if (spec.restoreStatePath !== undefined) state = await open(spec.restoreStatePath, "r");
    } catch (err) {
      server.close();
      consoleLog.close();
      await inherited.close();
      throw err;
    }
    const incomingFd = 3 + inherited.fds.length;
    const child = spawn(command, argv, {
      detached: true,
      stdio: [
        "ignore",
        "pipe",
        "pipe",
        ...inherited.fds,
        ...(state === undefined ? [] : [state.fd]),
      ],
      env: { PATH: process.env["PATH"] ?? "/usr/bin:/bin", LANG: "C" },
    });
    // Always pipes (stdio[1] and [2] above); the type cannot say so once fds follow them.
    for (const stream of [child.stdout, child.stderr]) {
      stream?.on("data", (chunk: Buffer) => consoleLog.write(chunk));
    }

    let exitInfo: ExitInfo | undefined;
    const exitListeners = new Set<(info: ExitInfo) => void>();
    const exited = new Promise<ExitInfo>((resolve) => {
      child.once("close", (code, signal) => {
        void (async () => {
          const info: ExitInfo = { code, signal };
          exitInfo = info;
          consoleLog.close();
          server.close();
          agentSocket?.destroy();
          await Promise.all(
            [agentSocketPath, qmpSocketPath, pidfilePath].map((p) => rm(p, { force: true })),
          );
          for (const listener of exitListeners) listener(info);
          resolve(info);
        })();
      });
    });

    const pid = await new Promise<number>((resolve, reject) => {
      child.once("spawn", () => resolve(child.pid ?? 0));
      child.once("error", (err) => {
        server.close();
        consoleLog.close();
        reject(
          new MsbError("VM_BOOT_FAILED", `Could not start QEMU: ${err.message}.`, { cause: err }),
        );
      });
    }).finally(() => Promise.all([inherited.close(), state?.close()]));
    await writeAtomic(pidfilePath, `${pid}\n`);
    logger.debug({ vmId: spec.vmId, pid, args }, "qemu spawned");
    if (state !== undefined) {
      const deadline = AbortSignal.timeout(INCOMING_TIMEOUT_MS);
      const gone = new AbortController();
      void exited.then(() => gone.abort());
      try {
        await startIncoming(qmpSocketPath, incomingFd, AbortSignal.any([deadline, gone.signal]));
      } catch (err) {
        try {
          process.kill(pid, "SIGKILL");
        } catch {
          // already gone
        }
        await exited;
        throw new MsbError(
          "VM_BOOT_FAILED",
          `QEMU did not take the snapshot: ${err instanceof Error ? err.message : String(err)} ${consoleLog.tail(5).join("\n")}`,
          { cause: err },
        );
      }
    }

    const vm: VmProcess = {
      pid,
      exited,
      connectAgent(signal) {
        if (agentSocket !== undefined) return Promise.resolve(agentSocket);
        return new Promise<Socket>((resolve, reject) => {
          const done = (): void => {
            signal.removeEventListener("abort", onAbort);
            exitListeners.delete(onExit);
            agentWaiter = undefined;
          };
          const onAbort = (): void => {
            done();
            reject(
              signal.reason instanceof Error ? signal.reason : new Error(String(signal.reason)),
            );
          };
          const onExit = (info: ExitInfo): void => {
            done();
            reject(
              new MsbError(
                "VM_BOOT_FAILED",
                `QEMU exited (${describeExit(info)}) before the guest agent connected.`,
              ),
            );
          };
          if (exitInfo !== undefined) {
            onExit(exitInfo);
            return;
          }
          if (signal.aborted) {
            onAbort();
            return;
          }
          signal.addEventListener("abort", onAbort, { once: true });
          exitListeners.add(onExit);
          agentWaiter = (socket) => {
            done();
            resolve(socket);
          };
        });
      },
      consoleTail(maxLines = 20) {
        return consoleLog.tail(maxLines);
      },
      hostRssBytes() {
        return exitInfo === undefined ? readHostRssBytes(pid) : Promise.resolve(undefined);
      },
      async quit(signal) {
        if (exitInfo !== undefined) return;
        const qmp = await connectQmp(qmpSocketPath, signal);
        try {
          // QEMU exits while answering; the closed connection is the expected outcome.
          await qmp.execute("quit").catch(() => undefined);
        } finally {
          qmp.close();
        }
      },
      async snapshot(statePath, signal) {
        await saveSnapshot(
          qmpSocketPath,
          join(dir, VM_FILES.migrateSocket),
          statePath,
          spec.credentials,
          signal,
        );
      },
      relocate(newDir) {
        dir = newDir;
        agentSocketPath = join(dir, VM_FILES.agentSocket);
        qmpSocketPath = join(dir, VM_FILES.qmpSocket);
        pidfilePath = join(dir, VM_FILES.pidfile);
      },
      async pause(signal) {
        await qmpCommand(qmpSocketPath, "stop", undefined, signal);
      },
      async resume(signal) {
        await qmpCommand(qmpSocketPath, "cont", undefined, signal);
      },
      async addPortForward(fwd, signal) {
        // hostfwd_add has no QMP command of its own; its HMP reply is empty on success.
        const reply = await qmpCommand(
          qmpSocketPath,
          "human-monitor-command",
          {
            "command-line": `hostfwd_add net0 ${fwd.protocol}:${fwd.hostAddress}:${fwd.hostPort}-:${fwd.guestPort}`,
          },
          signal,
        );
        if (typeof reply === "string" && reply.trim() !== "") {
          throw new MsbError(
            "INVALID_PARAMS",
            `Could not forward host port ${fwd.hostPort}: ${reply.trim()}`,
            {
              details: { hostPort: fwd.hostPort },
            },
          );
        }
      },
      kill(sig) {
        if (exitInfo !== undefined) return;
        try {
          process.kill(pid, sig);
        } catch {
          // already gone
        }
      },
    };
    return vm;
  }

  return {
    name: "qemu",
    async version() {
      if (qemuBinary === undefined) return "not installed";
      try {
        const { stdout } = await promisify(execFile)(qemuBinary, ["--version"], {
          timeout: 5_000,
        });
        return stdout.split("\n")[0]?.trim() ?? "unknown";
      } catch {
        return "unknown";
      }
    },
    launch,
  };
}
