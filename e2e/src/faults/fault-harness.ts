// Shared by the fault-injection suites: a real `msb server start --dev` on a temp MSB_HOME,
// JSON-RPC helpers, a direct read of the SQLite database, and an inventory of everything a
// crash can leave behind (QEMU processes, sockets, pidfiles, locks, temp files).
import { createHash } from "node:crypto";
import {
  createReadStream,
  existsSync,
  lstatSync,
  readFileSync,
  readdirSync,
  readlinkSync,
} from "node:fs";
import { join, relative } from "node:path";
import Database from "better-sqlite3";
import { isErrorCode } from "@msb/errors";
import { seededRandom } from "@msb/testing";
import { createControlPlaneClient } from "@msb/wire";
import {
  freePort,
  isAlive,
  msb,
  readLock,
  startForeground,
  tempHome,
  waitUntil,
  type ForegroundServer,
} from "../server/harness.js";

/** MSB_SOAK=1 (`npm run soak`) multiplies the iterations of every fault loop. */
export const SOAK = process.env["MSB_SOAK"] === "1";

export interface FaultServer {
  readonly home: string;
  readonly port: number;
  readonly url: string;
  /** The foreground process of the latest `msb server start` (replaced by `restart`). */
  current: ForegroundServer;
  /** `msb server start` again on the same home and port (after the old one died). */
  restart(): Promise<void>;
  /** `msb server stop`, SIGKILL of whatever remains, removal of the home. */
  dispose(): Promise<void>;
}

export async function startFaultServer(env: NodeJS.ProcessEnv = {}): Promise<FaultServer> {
  const home = tempHome();
  const port = await freePort();
  const args = ["--dev", "--port", String(port)];
  const server: FaultServer = {
    home: home.path,
    port,
    url: `http://127.0.0.1:${port}`,
    current: startForeground(home.path, args, env),
    async restart() {
      this.current = startForeground(home.path, args, env);
      await this.current.ready;
    },
    async dispose() {
      await msb(home.path, ["server", "stop"]);
      if (this.current.child.exitCode === null) this.current.child.kill("SIGKILL");
      for (const q of allQemuOf(home.path)) process.kill(q, "SIGKILL");
      home.remove();
    },
  };
  await server.current.ready;
  return server;
}

export interface RpcAnswer {
  readonly result?: unknown;
  readonly error?: { code: number; message: string; data?: { code?: string } };
}

/** One JSON-RPC call; `timeoutMs` bounds it so a hang fails the test instead of stalling it. */
export async function call(
  url: string,
  method: string,
  params: unknown,
  timeoutMs = 240_000,
): Promise<RpcAnswer> {
  const { status, body } = await createControlPlaneClient({ url, timeoutMs }).answer(
    method,
    params,
  );
  if (body === undefined) throw new Error(`${method}: HTTP ${status} without a JSON-RPC body`);
  return body as RpcAnswer;
}

/** A call that must succeed; its result. */
export async function ok<T>(url: string, method: string, params: unknown): Promise<T> {
  const answer = await call(url, method, params);
  if (answer.error !== undefined) {
    throw new Error(`${method} failed: ${JSON.stringify(answer.error)}`);
  }
  return answer.result as T;
}

/** True when an error answer carries one of our codes (never an opaque "Unknown error"). */
export function isCodedError(answer: RpcAnswer): boolean {
  const code = answer.error?.data?.code;
  return isErrorCode(code);
}

export interface CommandResult {
  exit_code: number;
  success: boolean;
  output: { stream: string; text: string }[];
  truncated?: boolean;
}

export function textOf(r: { output: { stream: string; text: string }[] }, stream?: string) {
  return r.output
    .filter((o) => stream === undefined || o.stream === stream)
    .map((o) => o.text)
    .join("\n");
}

/** `sh -c SCRIPT` in a sandbox. */
export function sh(
  url: string,
  sandbox: string,
  script: string,
  timeout?: number,
): Promise<RpcAnswer> {
  return call(url, "sandbox.command.run", {
    sandbox,
    command: "sh",
    args: ["-c", script],
    ...(timeout === undefined ? {} : { timeout }),
  });
}

export interface DbSandbox {
  namespace: string;
  name: string;
  state: string;
  reason: string | null;
  error_code: string | null;
}

/**
 * The sandboxes table read straight from `msb.db` (read-only, WAL), without a call to the
 * server that could itself notice a dead VM: what the database says on its own.
 */
export function dbSandboxes(home: string): DbSandbox[] {
  const db = new Database(join(home, "msb.db"), { readonly: true, fileMustExist: true });
  try {
    return db
      .prepare("SELECT namespace, name, state, reason, error_code FROM sandboxes ORDER BY name")
      .all() as DbSandbox[];
  } finally {
    db.close();
  }
}

export function dbSandbox(home: string, name: string): DbSandbox | undefined {
  return dbSandboxes(home).find((s) => s.name === name);
}

/** `PRAGMA integrity_check` of `msb.db`: "ok" when the database is sound. */
export function dbIntegrity(home: string): string {
  const db = new Database(join(home, "msb.db"), { fileMustExist: true });
  try {
    const rows = db.pragma("integrity_check") as { integrity_check: string }[];
    return rows.map((r) => r.integrity_check).join("; ");
  } finally {
    db.close();
  }
}

function argvOf(pid: number): string[] {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
  } catch {
    return [];
  }
}

/**
 * Live QEMU processes of sandboxes under `home`: those whose pidfile is in a sandbox's
 * directory (`sandboxes/<namespace>/<name>/qemu.pid`). Template builders and warm-pool VMs
 * are the vmm-agent's own and are left out (a pooled VM moves here when a sandbox claims it).
 */
export function qemuOf(home: string): number[] {
  const pids = new Set<number>();
  const root = join(home, "sandboxes");
  for (const ns of existsSync(root) ? readdirSync(root) : []) {
    for (const name of readdirSafe(join(root, ns))) {
      try {
        pids.add(Number(readFileSync(join(root, ns, name, "qemu.pid"), "utf8").trim()));
      } catch {
        // no VM process for this sandbox
      }
    }
  }
  return allQemuOf(home).filter((pid) => pids.has(pid));
}

function readdirSafe(dir: string): string[] {
  try {
    return readdirSync(dir);
  } catch {
    return [];
  }
}

/** Every live QEMU process whose command line names a file under `home`. */
export function allQemuOf(home: string): number[] {
  const prefix = `${home}/`;
  return readdirSync("/proc")
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
    .filter((pid) => {
      const argv = argvOf(pid);
      return (
        (argv[0] ?? "").includes("qemu-system") &&
        argv.some((a) => a.includes(prefix)) &&
        isAlive(pid)
      );
    });
}

/** Every file under `dir` (relative paths), with its type; skips blob contents' directory walk cost. */
function walk(dir: string, root = dir): { path: string; type: string }[] {
  const out: { path: string; type: string }[] = [];
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return out;
  }
  for (const name of names) {
    const full = join(dir, name);
    let st;
    try {
      st = lstatSync(full);
    } catch {
      continue;
    }
    const type = st.isDirectory() ? "dir" : st.isSocket() ? "socket" : "file";
    out.push({ path: relative(root, full), type });
    if (st.isDirectory()) out.push(...walk(full, root));
  }
  return out;
}

/** What crashes leave behind, found under MSB_HOME and in /proc. */
export interface Inventory {
  readonly qemu: number[];
  readonly sockets: string[];
  readonly pidfiles: string[];
  readonly locks: string[];
  readonly temps: string[];
}

export function inventory(home: string): Inventory {
  const files = walk(home);
  const isTemp = (p: string) =>
    /\.tmp$|\.tmp-|\.partial$|(^|\/)\.tmp-|^images\/tmp\/./.test(p) && !/^images\/tmp$/.test(p);
  return {
    qemu: allQemuOf(home),
    sockets: files.filter((f) => f.type === "socket").map((f) => f.path),
    pidfiles: files.filter((f) => /\.pid$/.test(f.path)).map((f) => f.path),
    locks: files.filter((f) => /\.lock$/.test(f.path)).map((f) => f.path),
    // A temp directory is reported once, not with everything inside it.
    temps: files
      .map((f) => f.path)
      .filter(
        (p, _, all) => isTemp(p) && !all.some((q) => q !== p && p.startsWith(`${q}/`) && isTemp(q)),
      ),
  };
}

/**
 * Asserts-by-exception that everything under `home` is accounted for while a server runs:
 * each QEMU belongs to a sandbox the database says is running and has its pidfile; each
 * pidfile and VM socket belongs to a live QEMU; the only other sockets are the services'
 * and the only lock is the server's, owned by a live supervisor; no temp file is left.
 * Returns the inventory for the test output.
 */
export function accountFor(home: string): Inventory {
  const inv = inventory(home);
  const problems: string[] = [];
  const running = new Set(
    dbSandboxes(home)
      .filter((s) => s.state === "running")
      .map((s) => `sandboxes/${s.namespace}/${s.name}`),
  );
  const qemuDirs = new Map<number, string>();
  for (const pid of inv.qemu) {
    const pidfile = inv.pidfiles.find(
      (p) => readFileSync(join(home, p), "utf8").trim() === String(pid),
    );
    if (pidfile === undefined) problems.push(`QEMU ${pid} has no pidfile under ${home}`);
    else qemuDirs.set(pid, pidfile.slice(0, pidfile.lastIndexOf("/")));
  }
  for (const [pid, dir] of qemuDirs) {
    // Template builders and warm-pool VMs belong to the vmm-agent, not to a sandbox: they are
    // accounted for while the live vmm-agent is their parent (one left by a dead agent is not).
    if (dir.startsWith("templates/") && parentIsVmmAgent(pid)) continue;
    if (!running.has(dir))
      problems.push(`QEMU ${pid} runs ${dir}, which the database does not call running`);
  }
  const liveDirs = new Set(qemuDirs.values());
  for (const p of inv.pidfiles) {
    if (p === "run/server.pid") continue;
    if (!liveDirs.has(p.slice(0, p.lastIndexOf("/")))) problems.push(`stale pidfile ${p}`);
  }
  for (const s of inv.sockets) {
    if (s === "run/image-service.sock" || s === "run/vmm-agent.sock") continue;
    if (!liveDirs.has(s.slice(0, s.lastIndexOf("/")))) problems.push(`stale socket ${s}`);
  }
  for (const l of inv.locks) {
    if (l !== "run/server.lock") problems.push(`lock left: ${l}`);
  }
  if (inv.locks.includes("run/server.lock") && !isAlive(readLock(home).pid)) {
    problems.push("run/server.lock names a dead supervisor");
  }
  for (const dir of running) {
    if (![...liveDirs].includes(dir))
      problems.push(`the database says ${dir} is running but no QEMU runs it`);
  }
  if (inv.temps.length > 0) problems.push(`temp files left: ${inv.temps.join(", ")}`);
  if (problems.length > 0)
    throw new Error(`unaccounted for under ${home}:\n  ${problems.join("\n  ")}`);
  return inv;
}

/** pids of the supervisor and its three services, from the lock. */
export function serverPids(home: string): { supervisor: number; services: Record<string, number> } {
  const lock = readLock(home);
  return {
    supervisor: lock.pid,
    services: Object.fromEntries(Object.entries(lock.services).map(([k, v]) => [k, v.pid])),
  };
}

/** Waits until the supervisor has restarted `service` (a new pid, ready socket or health). */
export async function waitRestarted(server: FaultServer, service: string, oldPid: number) {
  await waitUntil(
    async () => {
      if (!existsSync(join(server.home, "run", "server.lock"))) return false;
      const pid = serverPids(server.home).services[service];
      if (pid === undefined || pid === oldPid || !isAlive(pid)) return false;
      if (service === "control-plane") {
        return fetch(`${server.url}/api/v1/health`).then(
          (r) => r.ok,
          () => false,
        );
      }
      return existsSync(join(server.home, "run", `${service}.sock`));
    },
    `${service} to be restarted by the supervisor`,
    60_000,
  );
}

/** Who listens on TCP `port` (inode → pid through /proc), or undefined when nobody does. */
export function listenerOf(port: number): number | undefined {
  const hex = port.toString(16).toUpperCase().padStart(4, "0");
  const inodes = new Set<string>();
  for (const table of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(table, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols[1]?.endsWith(`:${hex}`) && cols[3] === "0A") inodes.add(cols[9] ?? "");
    }
  }
  if (inodes.size === 0) return undefined;
  for (const name of readdirSync("/proc").filter((n) => /^\d+$/.test(n))) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${name}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSafe(`/proc/${name}/fd/${fd}`));
      if (m !== null && inodes.has(m[1]!)) return Number(name);
    }
  }
  return -1; // listening, owner not visible to us
}

function readlinkSafe(path: string): string {
  try {
    return readlinkSync(path);
  } catch {
    return "";
  }
}

/** sha256 of a file, hex. */
export function sha256File(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const hash = createHash("sha256");
    createReadStream(path)
      .on("data", (c) => hash.update(c))
      .on("error", reject)
      .on("end", () => resolve(hash.digest("hex")));
  });
}

export { isAlive, msb, seededRandom, waitUntil };

/** True when the process's parent is alive and is a vmm-agent (QEMU is exec'd by setpriv). */
function parentIsVmmAgent(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Field 4 (ppid) follows the command name in parentheses, which may contain spaces.
    const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
    const argv = readFileSync(`/proc/${ppid}/cmdline`, "utf8");
    return argv.includes("vmm-agent");
  } catch {
    return false;
  }
}
