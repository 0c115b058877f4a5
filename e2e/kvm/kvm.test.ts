// The KVM path end to end: a real `msb server start` on a host whose /dev/kvm works (a real KVM
// host, or the nested L1 of tools/kvm-runner), with sandboxes booted under `-accel kvm`. One
// server, a few sandboxes: a cold boot, then a template restore and a pool claim of the same
// image, and one sandbox with a volume. Run by e2e/kvm/run.sh, never by the default e2e project
// (on a host without a usable /dev/kvm the server would choose TCG and this suite would fail).
import { createHash } from "node:crypto";
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  rmSync,
  statSync,
} from "node:fs";
import { createServer, type AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  freePort,
  msb,
  processesMentioning,
  rpc,
  startForeground,
  tempHome,
  waitUntil,
  type ForegroundServer,
} from "../src/server/harness.js";

// Set by e2e/kvm/run.sh, which runs this only where KVM works; a plain `vitest run` skips it.
const enabled = process.env["MSB_KVM_SUITE"] === "1";
const home = tempHome();
const volume = mkdtempSync(join(tmpdir(), "msb-kvm-volume-"));
let url = "";
let server: ForegroundServer;

interface RunResult {
  status: string;
  output: { stream: string; text: string }[];
}
interface StartDetails {
  start_kind: string | null;
}
interface Template {
  state: string;
  pool_ready: number;
  pool_target: number;
  reason: string;
}
interface Health {
  accelerator: string;
  services: {
    vmm: {
      note: string;
      isolation: { seccomp: boolean; qemuUser: string };
      templates?: Template[];
    };
  };
}

async function call<T>(method: string, params: Record<string, unknown>): Promise<T> {
  const { body } = await rpc(url, method, params);
  expect(body.error, `${method}: ${JSON.stringify(body.error)}`).toBeUndefined();
  return body.result as T;
}

async function health(): Promise<Health> {
  return (await (await fetch(`${url}/api/v1/health`)).json()) as Health;
}

function start(
  sandbox: string,
  config: Record<string, unknown> = {},
): Promise<StartDetails & { sandbox: string }> {
  return call("sandbox.start", {
    sandbox,
    config: { image: PYTHON, ...config },
    details: true,
  });
}

async function repl(sandbox: string, language: string, code: string): Promise<string> {
  const r = await call<RunResult>("sandbox.repl.run", { sandbox, language, code });
  const text = (stream: string): string =>
    r.output
      .filter((o) => o.stream === stream)
      .map((o) => o.text)
      .join("\n");
  expect(r.status, text("stderr")).toBe("success");
  return text("stdout");
}

async function command(sandbox: string, cmd: string, args: string[]): Promise<string> {
  const r = await call<{ exit_code: number; output: { stream: string; text: string }[] }>(
    "sandbox.command.run",
    { sandbox, command: cmd, args },
  );
  const out = r.output.map((o) => o.text).join("\n");
  expect(r.exit_code, out).toBe(0);
  return r.output
    .filter((o) => o.stream === "stdout")
    .map((o) => o.text)
    .join("\n");
}

/** The QEMU of a sandbox, by the pidfile in its directory. */
function qemuPid(sandbox: string): number {
  return Number(
    readFileSync(join(home.path, "sandboxes", "default", sandbox, "qemu.pid"), "utf8").trim(),
  );
}

/** Credentials and confinement of a process, as the kernel reports them. */
function confinement(pid: number): { uid: number; groups: number[]; seccomp: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const field = (name: string): string =>
    new RegExp(`^${name}:\\s*(.*)$`, "m").exec(status)?.[1]?.trim() ?? "";
  return {
    uid: Number(field("Uid").split(/\s+/)[0]),
    groups: field("Groups")
      .split(/\s+/)
      .filter((g) => g !== "")
      .map(Number),
    seccomp: Number(field("Seccomp")),
  };
}

function opensKvm(pid: number): boolean {
  return readdirSync(`/proc/${pid}/fd`).some((fd) => {
    try {
      return readlinkSync(`/proc/${pid}/fd/${fd}`) === "/dev/kvm";
    } catch {
      return false;
    }
  });
}

/** Waits until `count` templates are ready, each with a pooled clone. */
async function templatesReady(count: number): Promise<void> {
  await waitUntil(
    async () => {
      const t = (await health()).services.vmm.templates ?? [];
      const failed = t.find((x) => x.state === "failed");
      if (failed !== undefined) throw new Error(`template build failed: ${failed.reason}`);
      return t.filter((x) => x.state === "ready" && x.pool_ready >= 1).length >= count;
    },
    `${count} ready templates with a pooled clone each`,
    900_000,
  );
}

async function listening(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

const PYTHON = "microsandbox/python";
const NODE = "microsandbox/node";
const PROBE =
  "import random, socket\nprint(open('/dev/urandom','rb').read(16).hex(), socket.gethostname(), random.random())";

beforeAll(async () => {
  if (!enabled) return;
  const port = await freePort();
  url = `http://127.0.0.1:${port}`;
  server = startForeground(home.path, ["--dev", "--port", String(port)], {
    // A claimed or restored VM must never be idle-paused under a slow test step.
    MSB_IDLE_PAUSE_SECONDS: "0",
    MSB_POOL_SIZE: "1",
    MSB_VOLUME_ROOTS: tmpdir(),
  });
  await server.ready;
}, 900_000);

// The server's log is the only record of what L1 saw: show its tail next to a failure.
afterEach((ctx) => {
  if (ctx.task.result?.state === "fail" && server !== undefined) {
    console.error(`server output (tail):\n${server.output.stderr.slice(-6000)}`);
  }
});

afterAll(async () => {
  if (server?.child.exitCode === null) await msb(home.path, ["server", "stop"]);
  home.remove();
  rmSync(volume, { recursive: true, force: true });
});

describe.skipIf(!enabled)("msb on KVM", () => {
  it("chooses KVM, with seccomp and a dedicated uid per QEMU", async () => {
    const h = await health();
    expect(h.accelerator, h.services.vmm.note).toBe("kvm");
    expect(h.services.vmm.isolation.seccomp).toBe(true);
    expect(h.services.vmm.isolation.qemuUser).toContain("dedicated uid");
  });

  it("cold-boots sandboxes that answer Python and Node, their QEMUs confined with /dev/kvm through the kvm group", async () => {
    const [py, node] = await Promise.all([start("cold"), start("cold-node", { image: NODE })]);
    expect([py.start_kind, node.start_kind]).toEqual(["cold", "cold"]);
    expect(await repl("cold", "python", "print(6 * 7)")).toBe("42");
    expect(await repl("cold-node", "node", "console.log(6 * 7)")).toBe("42");

    const kvm = statSync("/dev/kvm");
    // The host grants /dev/kvm to a group, the way Debian's udev rule does: not to everyone.
    expect(kvm.mode & 0o777).toBe(0o660);
    for (const name of ["cold", "cold-node"]) {
      const pid = qemuPid(name);
      const c = confinement(pid);
      expect(c.uid).not.toBe(0);
      expect(c.groups).toContain(kvm.gid);
      expect(c.seccomp).toBe(2);
      expect(opensKvm(pid)).toBe(true);
    }
  });

  it("restores templates and claims pooled clones of both images, each answering with its own port forward and the host's time", async () => {
    await templatesReady(2);
    const clones = [
      ["clone-a", PYTHON],
      ["clone-b", PYTHON],
      ["node-a", NODE],
      ["node-b", NODE],
    ] as const;
    const ports = await Promise.all(clones.map(() => listening()));
    const kinds = await Promise.all(
      clones.map(([name, image], i) => start(name, { image, ports: [`${ports[i]}:8000`] })),
    );
    expect([kinds[0]!.start_kind, kinds[1]!.start_kind].sort()).toEqual(["pool", "template"]);
    expect([kinds[2]!.start_kind, kinds[3]!.start_kind].sort()).toEqual(["pool", "template"]);
    for (const [i, [name, image]] of clones.entries()) {
      if (image === PYTHON) expect(await repl(name, "python", "print(6 * 7)")).toBe("42");
      else expect(await repl(name, "node", "console.log(6 * 7)")).toBe("42");
      // kvmclock after a restore or a paused pool VM: the guest's wall clock is the host's.
      const guest = Number(await command(name, "date", ["+%s"]));
      expect(Math.abs(guest - Date.now() / 1000)).toBeLessThan(30);
      const c = confinement(qemuPid(name));
      expect(c.uid).not.toBe(0);
      expect(c.seccomp).toBe(2);
      expect(c.groups).toContain(statSync("/dev/kvm").gid);

      const server =
        image === PYTHON
          ? "python3 -m http.server 8000"
          : `node -e "require('http').createServer((q, r) => r.end(require('fs').readFileSync('who.txt'))).listen(8000)"`;
      await command(name, "sh", [
        "-c",
        `cd /tmp && echo ${name} > who.txt && (${server} >/dev/null 2>&1 &)`,
      ]);
      let body = "";
      await waitUntil(
        async () => {
          body = await fetch(`http://127.0.0.1:${ports[i]}/who.txt`)
            .then((r) => (r.ok ? r.text() : ""))
            .catch(() => "");
          return body !== "";
        },
        `the web server of ${name} through its forwarded port`,
        120_000,
      );
      expect(body).toBe(`${name}\n`);
    }
  });

  it("gives clones their own entropy, hostname and random state", async () => {
    const seen = await Promise.all(
      ["cold", "clone-a", "clone-b"].map((s) => repl(s, "python", PROBE)),
    );
    const [urandom, hostnames, randoms] = [0, 1, 2].map((i) => seen.map((l) => l.split(" ")[i]));
    expect(new Set(urandom).size).toBe(3);
    expect(hostnames).toEqual(["cold", "clone-a", "clone-b"]);
    expect(new Set(randoms).size).toBe(3);
    const node = await Promise.all(
      ["cold-node", "node-a", "node-b"].map((s) =>
        repl(
          s,
          "node",
          "console.log(require('crypto').randomBytes(16).toString('hex'), require('os').hostname(), Math.random())",
        ),
      ),
    );
    const cols = [0, 1, 2].map((i) => node.map((l) => l.split(" ")[i]));
    expect(new Set(cols[0]).size).toBe(3);
    expect(cols[1]).toEqual(["cold-node", "node-a", "node-b"]);
    expect(new Set(cols[2]).size).toBe(3);
  });

  it("round-trips files and runs commands", async () => {
    const data = createHash("sha256").update("kvm").digest();
    await call("sandbox.files.write", {
      sandbox: "clone-a",
      path: "/tmp/blob.bin",
      data: data.toString("base64"),
    });
    expect(await command("clone-a", "sha256sum", ["/tmp/blob.bin"])).toContain(
      createHash("sha256").update(data).digest("hex"),
    );
    const read = await call<{ data: string }>("sandbox.files.read", {
      sandbox: "clone-a",
      path: "/tmp/blob.bin",
    });
    expect(Buffer.from(read.data, "base64").equals(data)).toBe(true);
  });

  it("shares a volume both ways", async () => {
    expect((await start("vol", { volumes: [`${volume}:/data`] })).start_kind).toBe("cold");
    await command("vol", "sh", ["-c", "echo from-guest > /data/out.txt"]);
    expect(readFileSync(join(volume, "out.txt"), "utf8")).toBe("from-guest\n");
    expect(await repl("vol", "python", "print(open('/data/out.txt').read().strip())")).toBe(
      "from-guest",
    );
  });

  it("stops everything: no QEMU, no process of the server, no template memory left", async () => {
    for (const sandbox of ["cold", "cold-node", "clone-a", "clone-b", "node-a", "node-b", "vol"]) {
      await call("sandbox.stop", { sandbox });
    }
    const stopped = await msb(home.path, ["server", "stop"]);
    expect(stopped.code, stopped.stderr).toBe(0);
    await server.exited;
    expect(processesMentioning(home.path)).toEqual([]);
    const memoryDir = join(
      "/dev/shm",
      `msb-${createHash("sha256").update(home.path).digest("hex").slice(0, 12)}`,
    );
    expect(existsSync(memoryDir) ? readdirSync(memoryDir) : []).toEqual([]);
  });
});
