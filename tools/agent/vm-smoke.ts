// Drives real microVMs through @msb/agent-protocol. Started by tools/agent/vm-smoke.sh.
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile, readFile } from "node:fs/promises";
import { createServer, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { execFileSync } from "node:child_process";
import { AgentClient, ReplSession } from "@msb/agent-protocol";

const { values } = parseArgs({
  options: {
    kernel: { type: "string" },
    initramfs: { type: "string" },
    rootfs: { type: "string" },
    boots: { type: "string", default: "5" },
  },
});
const kernel = values.kernel ?? "";
const initramfs = values.initramfs ?? "";
const rootfs = values.rootfs ?? "";

/** The kernel command line and device flags the smoke test boots with. */
export const CMDLINE = "console=ttyS0 quiet panic=-1 reboot=t";

interface Vm {
  qemu: ChildProcess;
  server: Server;
  client: AgentClient;
  spawnedAt: number;
  helloAt: number;
  console: () => string;
  dir: string;
}

let failures = 0;
function check(name: string, ok: boolean, detail = ""): void {
  if (!ok) failures++;
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${detail ? ` — ${detail}` : ""}`);
}

async function boot(opts: { share?: string; dir?: string } = {}): Promise<Vm> {
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), "msb-smoke-")));
  const scratch = join(dir, "scratch.img");
  if (!opts.dir) {
    execFileSync("truncate", ["-s", "1G", scratch]);
    execFileSync("mkfs.ext4", ["-q", "-F", scratch]);
  }
  const sock = join(dir, "agent.sock");
  const server = createServer();
  server.listen(sock);
  await once(server, "listening");
  const conn = new Promise<Socket>((resolve) => server.once("connection", resolve));
  const args = [
    "-M",
    "microvm,rtc=on,acpi=off",
    "-accel",
    "tcg",
    "-cpu",
    "max",
    "-m",
    "512",
    "-smp",
    "1",
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    "-no-reboot",
    "-serial",
    "stdio",
    "-kernel",
    kernel,
    "-initrd",
    initramfs,
    "-append",
    CMDLINE,
    "-device",
    "virtio-rng-device",
    "-drive",
    `id=rootfs,file=${rootfs},format=raw,if=none,readonly=on`,
    "-device",
    "virtio-blk-device,drive=rootfs,serial=msb-rootfs",
    "-drive",
    `id=scratch,file=${scratch},format=raw,if=none,discard=unmap`,
    "-device",
    "virtio-blk-device,drive=scratch,serial=msb-scratch",
    "-device",
    "virtio-serial-device",
    // reconnect=1: when the host drops the connection (protocol error, restart), QEMU dials again
    "-chardev",
    `socket,id=agent,path=${sock},reconnect=1`,
    "-device",
    "virtserialport,chardev=agent,name=msb.agent",
    "-netdev",
    "user,id=net0",
    "-device",
    "virtio-net-device,netdev=net0",
  ];
  if (opts.share) {
    args.push(
      "-fsdev",
      `local,id=fs0,path=${opts.share},security_model=mapped-xattr`,
      "-device",
      "virtio-9p-device,fsdev=fs0,mount_tag=share",
    );
  }
  const spawnedAt = performance.now();
  const qemu = spawn("qemu-system-x86_64", args, { stdio: ["ignore", "pipe", "pipe"] });
  let log = "";
  qemu.stdout?.on("data", (d: Buffer) => (log += d.toString()));
  qemu.stderr?.on("data", (d: Buffer) => (log += d.toString()));
  const socket = await Promise.race([
    conn,
    once(qemu, "exit").then(() => {
      throw new Error(`QEMU exited early:\n${log}`);
    }),
  ]);
  const client = new AgentClient(socket, { requestTimeoutMs: 60_000 });
  await client.waitHello({ timeoutMs: 60_000 }).catch((e: unknown) => {
    throw new Error(`no hello: ${String(e)}\n${log}`);
  });
  return { qemu, server, client, spawnedAt, helloAt: performance.now(), console: () => log, dir };
}

async function stop(vm: Vm, keepDisk = false): Promise<boolean> {
  const exited = once(vm.qemu, "exit");
  await vm.client.shutdown({ timeoutMs: 20_000 }).catch(() => undefined);
  const timer = setTimeout(() => vm.qemu.kill("SIGKILL"), 20_000);
  const [code, signal] = (await exited) as [number | null, string | null];
  clearTimeout(timer);
  vm.server.close();
  if (!keepDisk) await rm(vm.dir, { recursive: true, force: true });
  return signal === null && code !== null;
}

const text = (o: readonly { stream: string; text: string }[], s = "stdout"): string =>
  o
    .filter((x) => x.stream === s)
    .map((x) => x.text)
    .join("");

async function fullRun(): Promise<void> {
  const share = await mkdtemp(join(tmpdir(), "msb-share-"));
  await writeFile(join(share, "from-host.txt"), "hello from the host\n");
  const vm = await boot({ share });
  const c = vm.client;
  const hello = c.hello!;
  check(
    "hello: ready, no boot errors",
    hello.ready && hello.bootErrors.length === 0,
    JSON.stringify(hello),
  );
  console.log(
    `     hello after ${(vm.helloAt - vm.spawnedAt).toFixed(0)} ms; guest boot_ms ${JSON.stringify(hello.bootMs)}`,
  );

  const cfg = await c.configure({
    hostname: "smoke",
    env: { MSB_SMOKE: "1" },
    workdir: "/work",
    timeUnixMs: Date.now(),
    entropy: new Uint8Array(64).fill(7),
    mounts: [{ tag: "share", path: "/mnt/share" }],
  });
  check("configure applied everything", cfg.errors.length === 0, JSON.stringify(cfg));
  const again = await c.configure({
    hostname: "smoke",
    mounts: [{ tag: "share", path: "/mnt/share" }],
  });
  check("configure is re-runnable", again.errors.length === 0, JSON.stringify(again));

  const ls = await c.run({ argv: ["ls", "-la", "/"] });
  check(
    "exec ls -la / exits 0",
    ls.exit.exitCode === 0 && ls.stdout.toString().includes("usr"),
    ls.stderr.toString(),
  );
  const f = await c.run({ argv: ["false"] });
  check("exec false exits 1", f.exit.exitCode === 1);
  const t0 = performance.now();
  const sl = await c.run({ argv: ["sleep", "100"], timeoutMs: 1000 });
  check(
    "exec sleep 100 with 1 s timeout is killed",
    sl.exit.timedOut && sl.exit.signal === 9,
    `${JSON.stringify(sl.exit)} after ${(performance.now() - t0).toFixed(0)} ms`,
  );
  const env = await c.run({
    argv: [
      "sh",
      "-c",
      "echo $MSB_SMOKE $(hostname) $(pwd); cat /mnt/share/from-host.txt; echo to-host > /mnt/share/from-guest.txt",
    ],
  });
  check(
    "env, hostname, workdir, 9p volume",
    env.stdout.toString() === "1 smoke /work\nhello from the host\n",
    JSON.stringify(env.stdout.toString() + env.stderr.toString()),
  );
  const back = await readFile(join(share, "from-guest.txt"), "utf8").catch(() => "");
  check("9p write reaches the host", back === "to-host\n", back);
  const net = await c.run({
    argv: ["sh", "-c", "cat /etc/resolv.conf; cat /proc/net/route | wc -l"],
  });
  check(
    "network: resolv.conf and a default route",
    net.stdout.toString().includes("nameserver 10.0.2.3"),
    net.stdout.toString(),
  );
  const cg = await c.run({
    argv: [
      "sh",
      "-c",
      "cat /proc/self/cgroup; cat /sys/fs/cgroup/msb/memory.max /sys/fs/cgroup/msb/pids.max; cat /proc/self/oom_score_adj; cat /proc/1/oom_score_adj",
    ],
  });
  check(
    "user code runs in the msb cgroup with limits",
    /0::\/msb\/x\d+/.test(cg.stdout.toString()),
    cg.stdout.toString().replace(/\n/g, " | "),
  );
  const pty = await c.run({ argv: ["sh", "-c", "tty; stty size"], pty: { rows: 33, cols: 101 } });
  check(
    "pty with size",
    pty.stdout.toString().includes("/dev/pts/") && pty.stdout.toString().includes("33 101"),
    JSON.stringify(pty.stdout.toString()),
  );
  const big = await c.run(
    { argv: ["head", "-c", "5000000", "/dev/zero"] },
    { maxOutputBytes: 10_000_000 },
  );
  check("5 MB of output through flow control", big.stdout.length === 5_000_000);

  // Resource limits: the OOM killer and pids.max hit user code, never the agent.
  const hog = await c.run({
    argv: ["python3", "-c", "a = []\nwhile True: a.append(bytearray(10**6))"],
    timeoutMs: 60_000,
  });
  check(
    "memory hog is OOM-killed inside its cgroup",
    hog.exit.oomKilled && hog.exit.signal === 9,
    JSON.stringify(hog.exit),
  );
  const bomb = await c.run({
    argv: ["sh", "-c", "f() { f | f & }; f; sleep 100"],
    timeoutMs: 3000,
  });
  const alive = await c.ping().catch(() => undefined);
  check(
    "fork bomb is contained and killed on timeout; agent answers",
    bomb.exit.timedOut && alive !== undefined,
    JSON.stringify(bomb.exit),
  );
  const after = await c.run({
    argv: ["sh", "-c", "ls /sys/fs/cgroup/msb | grep -c '^x'; echo ok"],
  });
  check(
    "after the bomb, new commands run",
    after.stdout.toString().includes("ok"),
    after.stdout.toString(),
  );

  await c.writeFile("/work/dir/hello.txt", "written by the host\n", { mkdirs: true });
  const rf = await c.readFile("/work/dir/hello.txt");
  check("write_file + read_file", rf.data.toString() === "written by the host\n");
  const ld = await c.listDir("/work/dir");
  check(
    "list_dir",
    ld.entries.some((e) => e.name === "hello.txt" && e.type === "file"),
  );
  const missing = await c.readFile("/nope").catch((e: unknown) => e as { code?: string });
  check(
    "read_file of a missing file is FILE_NOT_FOUND",
    (missing as { code?: string }).code === "FILE_NOT_FOUND",
  );

  // Python REPL
  const py = new ReplSession(c, { language: "python", interruptGraceMs: 3000 });
  const r1 = await py.run("print(5*5)", { timeoutMs: 60_000 });
  check(
    "python print(5*5) → 25",
    r1.status === "success" && text(r1.output) === "25\n",
    JSON.stringify(r1),
  );
  await py.run("name = 'World'");
  const r2 = await py.run("print(f'Hello {name}!')");
  check("python state across cells", text(r2.output) === "Hello World!\n", JSON.stringify(r2));
  const r3 = await py.run("def f():\n    return 1/0\nf()");
  check(
    "python exception → error + traceback",
    r3.status === "error" &&
      r3.error?.type === "ZeroDivisionError" &&
      text(r3.output, "stderr").includes("Traceback"),
    JSON.stringify(r3),
  );
  const r4 = await py.run("while True:\n    pass", { timeoutMs: 1500 });
  check(
    "python busy loop times out, interrupted (not restarted)",
    r4.status === "timeout" && !r4.restarted,
    JSON.stringify(r4),
  );
  const r5 = await py.run("print(name)");
  check("python next cell works, state kept", text(r5.output) === "World\n", JSON.stringify(r5));
  const r6 = await py.run(
    "import signal\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nimport time\ntime.sleep(100)",
    { timeoutMs: 1000 },
  );
  check(
    "python cell ignoring SIGINT → killed and restarted",
    r6.status === "timeout" && r6.restarted,
    JSON.stringify(r6),
  );
  const r7 = await py.run("print('fresh')");
  check("python works after restart", text(r7.output) === "fresh\n", JSON.stringify(r7));
  const r8 = await py.run("import subprocess\nsubprocess.run(['echo', 'child'])\nNone");
  check("python subprocess output captured", text(r8.output) === "child\n", JSON.stringify(r8));

  // Node REPL
  const nd = new ReplSession(c, { language: "node" });
  const n1 = await nd.run("var name = 'World'", { timeoutMs: 60_000 });
  const n2 = await nd.run("console.log(`Hello ${name}!`)");
  check(
    "node state across cells",
    n1.status === "success" && text(n2.output) === "Hello World!\n",
    JSON.stringify([n1, n2]),
  );
  const n3 = await nd.run(
    "const v = await new Promise((r) => setTimeout(() => r(6 * 7), 50)); console.log(v)",
  );
  check("node top-level await", text(n3.output) === "42\n", JSON.stringify(n3));
  const n4 = await nd.run(
    "setTimeout(() => console.log('timer'), 100); Promise.reject(new Error('nope'))",
  );
  check(
    "node rejected promise → error, timer output captured",
    n4.status === "error" && text(n4.output).includes("timer"),
    JSON.stringify(n4),
  );
  const n5 = await nd.run("while (true) {}", { timeoutMs: 1500 });
  check("node busy loop interrupted", n5.status === "timeout" && !n5.restarted, JSON.stringify(n5));
  const n6 = await nd.run("console.log(name)");
  check("node next cell works", text(n6.output) === "World\n", JSON.stringify(n6));

  // The host drops the connection: QEMU reconnects, the agent says hello again, processes live on.
  const survivor = await c.exec({ argv: ["sleep", "30"] }, { onOutput: () => undefined });
  const reconnected = new Promise<Socket>((resolve) => vm.server.once("connection", resolve));
  c.close();
  const sock2 = await reconnected;
  const c2 = new AgentClient(sock2, { requestTimeoutMs: 30_000 });
  const hello2 = await c2.waitHello({ timeoutMs: 10_000 });
  check(
    "host reconnect → new hello listing the live process",
    hello2.streams.includes(survivor.stream),
    JSON.stringify(hello2.streams),
  );
  vm.client = c2;
  const m1 = await c2.metrics();
  const m = await c2.metrics();
  check(
    "metrics",
    m.memTotalBytes > 0 && m.diskTotalBytes > 0 && m.procs > 0,
    JSON.stringify([m1, m]),
  );

  const clean = await stop(vm, true);
  check("shutdown → QEMU exits by itself", clean, vm.console().split("\n").slice(-5).join(" | "));

  // Stop/start: the scratch disk keeps the overlay's upper layer.
  const vm2 = await boot({ dir: vm.dir });
  const kept = await vm2.client
    .readFile("/work/dir/hello.txt")
    .catch((e: unknown) => ({ data: Buffer.from(String(e)) }));
  check(
    "state survives stop/start (scratch disk)",
    kept.data.toString() === "written by the host\n",
    kept.data.toString(),
  );
  check(
    "restarted guest is clean (no fsck warnings)",
    vm2.client.hello?.bootWarnings.length === 0,
    JSON.stringify(vm2.client.hello?.bootWarnings),
  );
  await stop(vm2);
  await rm(share, { recursive: true, force: true });
}

async function timedBoot(): Promise<{ hello: number; firstPrint: number; kernelToAgent: number }> {
  const vm = await boot();
  const py = new ReplSession(vm.client, { language: "python" });
  let firstPrint = 0;
  await py.run("print(5*5)", {
    timeoutMs: 60_000,
    onOutput: (o) => {
      if (!firstPrint && o.text.includes("25")) firstPrint = performance.now();
    },
  });
  const hello = vm.helloAt - vm.spawnedAt;
  const result = {
    hello,
    firstPrint: firstPrint - vm.spawnedAt,
    kernelToAgent: vm.client.hello?.bootMs.total ?? 0,
  };
  await stop(vm);
  return result;
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? 0;
};

await fullRun();
const runs = [];
for (let i = 0; i < Number(values.boots); i++) runs.push(await timedBoot());
const fig = {
  boots: runs.length,
  spawn_to_hello_ms: Math.round(median(runs.map((r) => r.hello))),
  spawn_to_first_print_ms: Math.round(median(runs.map((r) => r.firstPrint))),
  guest_boot_to_ready_ms: Math.round(median(runs.map((r) => r.kernelToAgent))),
  runs: runs.map((r) => ({ hello: Math.round(r.hello), first_print: Math.round(r.firstPrint) })),
};
console.log(JSON.stringify(fig));
console.log(`${failures === 0 ? "all checks passed" : `${failures} checks FAILED`}`);
process.exit(failures === 0 ? 0 : 1);
