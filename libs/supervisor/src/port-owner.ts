import { readFileSync } from "node:fs";
import { createServer } from "node:net";
import { MsbError } from "@msb/errors";
import type { ProcessTable } from "./proc.js";

/** One listening TCP socket from `/proc/net/tcp` or `/proc/net/tcp6`. */
export interface ListeningSocket {
  readonly address: string;
  readonly port: number;
  readonly inode: string;
}

const TCP_LISTEN = "0A";
/** A closing connection has no owner left and does not keep a listener from binding. */
const TCP_TIME_WAIT = "06";

function decodeIpv4(hex: string): string {
  // The kernel prints the address as one host-order (little-endian here) 32-bit word.
  const bytes = [0, 2, 4, 6].map((i) => parseInt(hex.slice(i, i + 2), 16)).reverse();
  return bytes.join(".");
}

function decodeIpv6(hex: string): string {
  // Four host-order 32-bit words; each word's bytes are reversed.
  const bytes: number[] = [];
  for (let w = 0; w < 4; w++) {
    const word = hex.slice(w * 8, w * 8 + 8);
    for (let b = 3; b >= 0; b--) bytes.push(parseInt(word.slice(b * 2, b * 2 + 2), 16));
  }
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2)
    groups.push((((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0)).toString(16));
  const full = groups.join(":");
  if (full === "0:0:0:0:0:0:0:0") return "::";
  if (full === "0:0:0:0:0:0:0:1") return "::1";
  return full;
}

/** Listening sockets in the text of `/proc/net/tcp` or `/proc/net/tcp6`; other states are skipped. */
export function parseProcNetTcp(text: string): ListeningSocket[] {
  return parseSockets(text, (state) => state === TCP_LISTEN);
}

function parseSockets(text: string, keep: (state: string) => boolean): ListeningSocket[] {
  const sockets: ListeningSocket[] = [];
  for (const line of text.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    const local = fields[1];
    const state = fields[3];
    const inode = fields[9];
    if (local === undefined || state === undefined || !keep(state) || inode === undefined) continue;
    if (inode === "0") continue;
    const [addrHex, portHex] = local.split(":");
    if (addrHex === undefined || portHex === undefined) continue;
    sockets.push({
      address: addrHex.length === 8 ? decodeIpv4(addrHex) : decodeIpv6(addrHex),
      port: parseInt(portHex, 16),
      inode,
    });
  }
  return sockets;
}

/** Who holds a port: the pid and command line when `/proc` lets us see them. */
export interface PortHolder {
  readonly port: number;
  readonly pid?: number;
  readonly command?: string;
  /** Set when the holder is an msb service: the `MSB_HOME` it serves. */
  readonly msbHome?: string;
  /**
   * True when no owner was found although every process was searched (we are root): the
   * socket is then not held by any process this host shows, not merely hidden from us.
   */
  readonly searchedAll?: boolean;
}

export interface PortHolderDeps {
  readonly table: ProcessTable;
  /** Returns the text of `/proc/net/tcp` and `/proc/net/tcp6` (missing files → ""). */
  readonly readNetTcp?: () => string[];
  /** Our uid (default: `process.getuid()`); root sees every process's file descriptors. */
  readonly uid?: number;
}

function readProcNetTcp(): string[] {
  return ["/proc/net/tcp", "/proc/net/tcp6"].map((path) => {
    try {
      return readFileSync(path, "utf8");
    } catch {
      return "";
    }
  });
}

/**
 * Finds the process holding `port` by matching socket inodes against `/proc/<pid>/fd`: the
 * listener when there is one, else any socket bound to the port (bound but not listening, or a
 * connection from it), which keeps a new listener from binding just the same.
 */
export function findPortHolder(port: number, deps: PortHolderDeps): PortHolder | undefined {
  const texts = (deps.readNetTcp ?? readProcNetTcp)();
  const onPort = texts
    .flatMap((t) => parseSockets(t, (state) => state !== TCP_TIME_WAIT))
    .filter((s) => s.port === port);
  if (onPort.length === 0) return undefined;
  const listening = new Set(texts.flatMap((t) => parseProcNetTcp(t)).map((s) => s.inode));
  // The listener first: the process that answers on the port is the one to name.
  const listeners = new Set(onPort.filter((s) => listening.has(s.inode)).map((s) => s.inode));
  return (
    ownerOf(port, listeners, deps) ??
    ownerOf(port, new Set(onPort.map((s) => s.inode)), deps) ??
    unknownHolder(port, deps)
  );
}

/** A holder nobody could be named for; `searchedAll` when we are root and saw every process. */
export function unknownHolder(port: number, deps: Pick<PortHolderDeps, "uid">): PortHolder {
  const uid = deps.uid ?? process.getuid?.();
  return uid === 0 ? { port, searchedAll: true } : { port };
}

function ownerOf(
  port: number,
  inodes: ReadonlySet<string>,
  deps: PortHolderDeps,
): PortHolder | undefined {
  if (inodes.size === 0) return undefined;
  for (const pid of deps.table.pids()) {
    const owns = deps.table.fdTargets(pid).some((target) => {
      const m = /^socket:\[(\d+)\]$/.exec(target);
      return m?.[1] !== undefined && inodes.has(m[1]);
    });
    if (!owns) continue;
    const argv = deps.table.cmdline(pid);
    const command = argv?.join(" ");
    const isMsb = argv?.some((a) => /apps\/(control-plane|msb)\/dist\/main\.js$/.test(a)) ?? false;
    const msbHome = isMsb ? deps.table.environ(pid, "MSB_HOME") : undefined;
    return {
      port,
      pid,
      ...(command === undefined ? {} : { command }),
      ...(msbHome === undefined ? {} : { msbHome }),
    };
  }
  return undefined;
}

/** The PORT_IN_USE error a user sees: who holds the port and the two ways out. */
export function portInUseError(holder: PortHolder): MsbError {
  const who =
    holder.pid !== undefined
      ? `pid ${holder.pid}${holder.command === undefined ? "" : ` (${holder.command})`}`
      : holder.searchedAll === true
        ? "a socket that no process on this host holds (the kernel may still be closing it, or it belongs to another network namespace; try `ss -tanp`)"
        : "another process (its owner is not visible to this user; try `ss -ltnp`)";
  const stop =
    holder.msbHome === undefined
      ? holder.pid === undefined
        ? "stop it"
        : `stop it (kill ${holder.pid})`
      : `it is an msb server of MSB_HOME ${holder.msbHome}: stop it with \`msb server stop --home ${holder.msbHome}\``;
  return new MsbError(
    "PORT_IN_USE",
    `Port ${holder.port} is already in use by ${who}. Next step: ${stop}, or start on another port with \`--port\`.`,
    { details: { ...holder } },
  );
}

/**
 * Checks that `host:port` can be bound right now by binding it and letting go. A port taken by
 * someone else becomes PORT_IN_USE naming the holder; other bind failures (a host that is not
 * ours, a privileged port) become CONFIG_INVALID with the reason.
 */
export async function assertPortFree(
  host: string,
  port: number,
  deps: PortHolderDeps,
): Promise<void> {
  const failure = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
    const server = createServer();
    server.once("error", (err: NodeJS.ErrnoException) => resolve(err));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(undefined)));
  });
  if (failure === undefined) return;
  if (failure.code === "EADDRINUSE") {
    throw portInUseError(findPortHolder(port, deps) ?? unknownHolder(port, deps));
  }
  throw new MsbError(
    "CONFIG_INVALID",
    `Cannot listen on ${host}:${port}: ${failure.message}. Next step: pick another --host or --port.`,
    { details: { host, port, errno: failure.code ?? "unknown" } },
  );
}
