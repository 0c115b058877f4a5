import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { lookup } from "node:dns/promises";
import { chown, lstat, mkdir, readFile, symlink, writeFile } from "node:fs/promises";
import { connect, createServer, type AddressInfo, type Server } from "node:net";
import { networkInterfaces } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NetworkMode, RunStatus, type GetHostInfoResponse, type ListVmsResponse } from "@msb/proto";
import {
  createVm as createTestVm,
  exec,
  guestEnv,
  prepare,
  runCode,
  startVmmAgent,
  stopAndCheckClean,
  unary,
  type GuestArtifacts,
  type VmmAgentProcess,
} from "./harness.js";
import { freePort } from "@msb/testing";

// What keeps a hostile guest (root, running code of its own from its first instruction) inside
// its VM, checked from inside real VMs under a real vmm-agent running as root: QEMU's seccomp
// filter and unprivileged uid, the host firewall behind the network policies, and the 9p
// volume boundary. See docs/security.md.

const run = promisify(execFile);
const PUBLIC = "sec/public";
const ANY = "sec/any";
const NONE = "sec/none";
// An id range of its own, so that this file's firewall chain and uids meet no other vmm-agent.
const ID_BASE = 1_900_300_000;
const OWNER_UID = 4242;

let root: string;
let agent: VmmAgentProcess;
let artifacts: GuestArtifacts;
let rwVolume: string;
let roVolume: string;
let ownedVolume: string;
let canaryPath: string;
const secret = `canary-${randomBytes(12).toString("hex")}`;
const servers: Server[] = [];
let loopbackPort: number;
let hostAddress: string | undefined;
let hostAddressPort: number;
let forwardedPort: number;

/** A TCP listener on the host that greets whoever connects. */
async function greeter(host: string, greeting: string): Promise<number> {
  const server = createServer((socket) => socket.end(greeting));
  servers.push(server);
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, host, resolve);
  });
  return (server.address() as AddressInfo).port;
}

function createVm(vmId: string, extra: Record<string, unknown>): Promise<unknown> {
  const fields = { bootTimeoutMs: 240_000, ...extra };
  return createTestVm(agent.client, artifacts.rootfsPath, vmId, fields);
}

/** Runs a python3 script in the guest and returns its stdout. */
async function py(vmId: string, script: string): Promise<string> {
  const r = await exec(agent.client, {
    vmId,
    command: "python3",
    args: ["-c", script],
    timeoutMs: 120_000,
  });
  if (r.result.exitCode !== 0) throw new Error(`guest script failed: ${r.stderr}`);
  return r.stdout;
}

/** What a TCP connection from the guest to host:port gives: the greeting, or "blocked <error>". */
function tryConnect(vmId: string, host: string, port: number): Promise<string> {
  return py(
    vmId,
    `
import socket
s = socket.socket(socket.AF_INET6 if ":" in ${JSON.stringify(host)} else socket.AF_INET)
s.settimeout(8)
try:
    s.connect((${JSON.stringify(host)}, ${port}))
    print("connected", s.recv(100).decode())
except Exception as e:
    print("blocked", type(e).__name__)
`,
  ).then((out) => out.trim());
}

async function vmPid(vmId: string): Promise<number> {
  const { vms } = await unary<object, ListVmsResponse>(agent.client, "listVms", {});
  const pid = vms.find((v) => v.vmId === vmId)?.pid ?? 0;
  expect(pid).toBeGreaterThan(0);
  return pid;
}

/** The fields of /proc/<pid>/status that say who a process is and how it is confined. */
async function procStatus(pid: number): Promise<Record<string, string>> {
  const text = await readFile(`/proc/${pid}/status`, "utf8");
  return Object.fromEntries(
    text.split("\n").map((line) => {
      const [key, ...rest] = line.split(":");
      return [key ?? "", rest.join(":").trim()];
    }),
  );
}

function vmDir(vmId: string): string {
  return join(agent.msbHome, "sandboxes", ...vmId.split("/"));
}

async function firewallRules(): Promise<string> {
  const [v4, v6] = await Promise.all([run("iptables", ["-S"]), run("ip6tables", ["-S"])]);
  return `${v4.stdout}\n${v6.stdout}`;
}

beforeAll(async () => {
  ({ artifacts, root } = await prepare("msb-e2e-isolation-"));
  rwVolume = join(root, "rw");
  roVolume = join(root, "ro");
  ownedVolume = join(root, "owned");
  canaryPath = join(root, "canary.txt");
  await Promise.all([mkdir(rwVolume), mkdir(roVolume), mkdir(ownedVolume)]);
  await chown(ownedVolume, OWNER_UID, OWNER_UID);
  await writeFile(canaryPath, `${secret}\n`, { mode: 0o644 });
  await writeFile(join(roVolume, "from-host.txt"), "read me\n");
  // Links the host puts inside a volume, pointing out of it.
  await symlink(canaryPath, join(rwVolume, "abs-link"));
  await symlink("../canary.txt", join(rwVolume, "rel-link"));

  loopbackPort = await greeter("127.0.0.1", "hello-from-loopback");
  hostAddress = Object.values(networkInterfaces())
    .flat()
    .find((a) => a?.family === "IPv4" && !a.internal)?.address;
  if (hostAddress !== undefined) hostAddressPort = await greeter(hostAddress, "hello-from-host-ip");
  forwardedPort = await freePort();

  agent = await startVmmAgent(join(root, "home"), {
    ...guestEnv(artifacts),
    MSB_MAX_VMS: "3",
    MSB_ACCEL: "tcg",
    MSB_VM_UID_BASE: String(ID_BASE),
    MSB_VM_GID_BASE: String(ID_BASE),
    MSB_VOLUME_ROOTS: root,
  });
  await createVm(PUBLIC, {
    volumes: [
      { hostPath: rwVolume, guestPath: "/mnt/rw", readOnly: false },
      { hostPath: roVolume, guestPath: "/mnt/ro", readOnly: true },
    ],
    ports: [{ hostPort: forwardedPort, guestPort: 8000, protocol: "tcp", hostAddress: "" }],
  });
  await createVm(ANY, { network: NetworkMode.NETWORK_MODE_ANY });
  await createVm(NONE, {
    network: NetworkMode.NETWORK_MODE_NONE,
    volumes: [{ hostPath: ownedVolume, guestPath: "/mnt/owned", readOnly: false }],
  });
});

afterAll(async () => {
  await stopAndCheckClean(agent, root);
  for (const server of servers) server.close();
});

describe("QEMU process", () => {
  it("runs every VM unprivileged, under seccomp, with no capabilities", async () => {
    const host = await unary<object, GetHostInfoResponse>(agent.client, "getHostInfo", {});
    expect(host.isolation).toMatchObject({ seccomp: true, networkPolicyEnforced: true });
    expect(host.isolation!.qemuUser).toContain("dedicated uid per VM");
    const uids = new Set<string>();
    for (const vmId of [PUBLIC, ANY, NONE]) {
      const status = await procStatus(await vmPid(vmId));
      const [uid] = (status["Uid"] ?? "").split(/\s+/);
      expect(uid).not.toBe("0");
      // Real, effective, saved and filesystem uid are all the VM's.
      expect(new Set(status["Uid"]!.split(/\s+/)).size).toBe(1);
      expect(status["Seccomp"]).toBe("2");
      expect(status["NoNewPrivs"]).toBe("1");
      expect(status["CapEff"]).toBe("0000000000000000");
      expect(status["CapBnd"]).toBe("0000000000000000");
      uids.add(uid!);
    }
    expect(uids.size).toBe(3);
  });

  it("runs a VM whose volume belongs to a user as that user, with the network gid", async () => {
    const status = await procStatus(await vmPid(NONE));
    expect(status["Uid"]!.split(/\s+/)[0]).toBe(String(OWNER_UID));
    expect(status["Gid"]!.split(/\s+/)[0]).toBe(String(ID_BASE + 1));
    expect(status["Groups"]).toBe(String(ID_BASE));
  });

  it("keeps one VM's QEMU uid away from another VM's scratch disk", async () => {
    const statusA = await procStatus(await vmPid(PUBLIC));
    const statusB = await procStatus(await vmPid(ANY));
    const diskB = join(vmDir(ANY), "scratch.ext4");
    const asUser = (status: Record<string, string>) => [
      `--reuid=${status["Uid"]!.split(/\s+/)[0]}`,
      `--regid=${status["Gid"]!.split(/\s+/)[0]}`,
      `--groups=${status["Groups"]}`,
      "--",
      "head",
      "-c",
      "1024",
      diskB,
    ];
    const asA = await run("setpriv", asUser(statusA), { encoding: "buffer" }).then(
      () => "read",
      (err: { stderr?: Buffer }) => err.stderr?.toString() ?? "failed",
    );
    expect(asA).toContain("Permission denied");
    // The same command as B's own QEMU user reads it: the refusal above is about the uid.
    const asB = await run("setpriv", asUser(statusB), { encoding: "buffer" });
    expect(asB.stdout.length).toBe(1024);
    const st = await lstat(diskB);
    expect(st.mode & 0o777).toBe(0o600);
    expect(String(st.uid)).toBe(statusB["Uid"]!.split(/\s+/)[0]);
  });
});

describe("network policy", () => {
  it("keeps a public VM off the host's loopback (slirp's 10.0.2.2); any reaches it", async () => {
    expect(await tryConnect(PUBLIC, "10.0.2.2", loopbackPort)).toMatch(/^blocked/);
    expect(await tryConnect(ANY, "10.0.2.2", loopbackPort)).toBe("connected hello-from-loopback");
  });

  it("keeps a public VM off the host's other addresses; any reaches them", async (ctx) => {
    if (hostAddress === undefined) ctx.skip("this host has no non-loopback IPv4 address");
    expect(await tryConnect(PUBLIC, hostAddress!, hostAddressPort)).toMatch(/^blocked/);
    expect(await tryConnect(ANY, hostAddress!, hostAddressPort)).toBe(
      "connected hello-from-host-ip",
    );
  });

  it("keeps a public VM off the host's IPv6 loopback (slirp's fec0::2); any reaches it", async (ctx) => {
    // The agent configures IPv4 only, but the guest is root and slirp speaks IPv6: an attacker
    // gives eth0 an address in slirp's fec0::/64 itself (ioctl SIOCSIFADDR, no tools needed).
    const addV6 = (vmId: string, address: string) =>
      py(
        vmId,
        `
import socket, struct, fcntl, time
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
req = struct.pack("16sIi", socket.inet_pton(socket.AF_INET6, "${address}"), 64, socket.if_nametoindex("eth0"))
try:
    fcntl.ioctl(s, 0x8916, req)
except OSError as e:
    if e.errno != 17: raise
want = socket.inet_pton(socket.AF_INET6, "${address}").hex()
# Usable once duplicate address detection is over (flag 0x40, tentative, cleared).
while not any(l.split()[0] == want and not int(l.split()[4], 16) & 0x40 for l in open("/proc/net/if_inet6")):
    time.sleep(0.1)
print("ok")
`,
      );
    const hasV6Loopback = await greeter("::1", "hello-from-v6-loopback").then(
      (port) => port,
      () => undefined,
    );
    if (hasV6Loopback === undefined) ctx.skip("the host has no IPv6 loopback");
    await addV6(PUBLIC, "fec0::15");
    await addV6(ANY, "fec0::16");
    expect(await tryConnect(ANY, "fec0::2", hasV6Loopback!)).toBe(
      "connected hello-from-v6-loopback",
    );
    expect(await tryConnect(PUBLIC, "fec0::2", hasV6Loopback!)).toMatch(/^blocked/);
  });

  it("keeps a public VM off metadata, RFC 1918 and CGNAT addresses", async () => {
    // slirp turns the host's refusal into a guest-side timeout or refusal; either is "blocked".
    // (On the development machines every TCP address answers, so "any" connects to these.)
    for (const host of ["169.254.169.254", "10.255.255.1", "192.168.1.1", "100.64.0.1"]) {
      expect(await tryConnect(PUBLIC, host, 80)).toMatch(/^blocked/);
    }
  });

  it("still resolves names under public (DNS to the host's resolvers is allowed)", async (ctx) => {
    const hostCanResolve = await lookup("deb.debian.org").then(
      () => true,
      () => false,
    );
    if (!hostCanResolve) ctx.skip("this host itself cannot resolve deb.debian.org");
    const out = await py(
      PUBLIC,
      "import socket\nprint(len(socket.getaddrinfo('deb.debian.org', 80)) > 0)",
    );
    expect(out.trim()).toBe("True");
  });

  it("still serves port forwards of a public VM", async () => {
    const started = await runCode(agent.client, {
      vmId: PUBLIC,
      language: "python",
      code: `
import socket, threading
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", 8000))
srv.listen()
def serve():
    while True:
        c, _ = srv.accept()
        c.sendall(b"hello-from-guest")
        c.close()
threading.Thread(target=serve, daemon=True).start()
print("listening")
`,
    });
    expect(started.result.status).toBe(RunStatus.RUN_STATUS_SUCCESS);
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = connect(forwardedPort, "127.0.0.1");
      let data = "";
      socket.on("data", (chunk: Buffer) => (data += chunk.toString()));
      socket.on("end", () => resolve(data));
      socket.on("error", reject);
    });
    expect(reply).toBe("hello-from-guest");
  });

  it("gives a VM with network none no interface but lo", async () => {
    // Only device-backed interfaces can carry traffic out of the VM; the kernel's own
    // pseudo-devices (lo, the sit0 IPv6-in-IPv4 tunnel) have no device under them.
    const out = await py(
      NONE,
      `import os
names = sorted(os.listdir('/sys/class/net'))
print(' '.join(n for n in names if os.path.exists('/sys/class/net/%s/device' % n)) or '-')
print(' '.join(names))`,
    );
    const [devices, names] = out.trim().split("\n");
    expect(devices).toBe("-");
    expect(names).toMatch(/\blo\b/);
    // The same check sees the virtio-net device of a VM that has a network.
    const withNet = await py(
      ANY,
      "import os\nprint([n for n in os.listdir('/sys/class/net') if os.path.exists('/sys/class/net/%s/device' % n)])",
    );
    expect(withNet.trim()).toBe("['eth0']");
  });
});

describe("host files", () => {
  it("never shows the guest a host file outside its volumes", async () => {
    // Every way in we know of: .. out of the mount, the host's links inside the volume, the
    // host path itself, /proc/1/root, and more 9p attaches of the tag with other anames.
    const out = await exec(agent.client, {
      vmId: PUBLIC,
      command: "sh",
      args: [
        "-c",
        [
          `for p in /mnt/rw/../canary.txt /mnt/rw/../../canary.txt /mnt/rw/abs-link /mnt/rw/rel-link ${canaryPath} /proc/1/root${canaryPath} /mnt/rw/../../../../../../..${canaryPath}; do cat "$p" 2>&1; done`,
          "ls -la /mnt/rw /mnt/rw/.. 2>&1",
          "mkdir -p /tmp/x && for aname in / .. ../.. " +
            root +
            "; do mount -t 9p -o trans=virtio,version=9p2000.L,aname=$aname msbvol0 /tmp/x 2>&1 && (ls -la /tmp/x; cat /tmp/x/canary.txt /tmp/x/../canary.txt) 2>&1; umount /tmp/x 2>/dev/null; done",
        ].join("; "),
      ],
      timeoutMs: 120_000,
    });
    expect(out.stdout + out.stderr).not.toContain(secret);
    // The host's links exist in the guest but resolve in the guest's own tree.
    expect(out.stdout).toMatch(/abs-link/);
  });

  it("refuses writes through a read-only volume even after the guest remounts it", async () => {
    const r = await exec(agent.client, {
      vmId: PUBLIC,
      command: "sh",
      args: [
        "-c",
        "mount -o remount,rw /mnt/ro; echo x > /mnt/ro/new.txt; echo y >> /mnt/ro/from-host.txt; rm /mnt/ro/from-host.txt",
      ],
    });
    expect(r.result.exitCode).not.toBe(0);
    expect(r.stderr).toContain("Read-only file system");
    expect(await readFile(join(roVolume, "from-host.txt"), "utf8")).toBe("read me\n");
    await expect(lstat(join(roVolume, "new.txt"))).rejects.toThrow(/ENOENT/);
  });

  it("stores what the guest makes (symlink, setuid file, device node) as plain files on the host", async () => {
    const r = await exec(agent.client, {
      vmId: PUBLIC,
      command: "sh",
      args: [
        "-c",
        [
          "cd /mnt/rw",
          `ln -s ${canaryPath} guest-link`,
          "cp /bin/sh suid-sh && chown 0:0 suid-sh && chmod 4755 suid-sh",
          "mknod guest-null c 1 3",
          "mkfifo guest-fifo",
          // The guest sees what it made (mapped-xattr keeps it in xattrs)...
          "stat -c '%n %F %a' guest-link suid-sh guest-null",
          `cat guest-link 2>&1 | grep -c ${secret} || true`,
        ].join(" && "),
      ],
    });
    expect(r.result.exitCode).toBe(0);
    expect(r.stdout).toContain("guest-link symbolic link");
    expect(r.stdout).toContain("suid-sh regular file 4755");
    expect(r.stdout).toContain("guest-null character special file");
    // ...and the link leads to the guest's own path, not the host's canary.
    expect(r.stdout.trim().split("\n").pop()).toBe("0");
    // ...but the host has only regular files, owned by the VM's uid, without setuid.
    const uid = (await procStatus(await vmPid(PUBLIC)))["Uid"]!.split(/\s+/)[0];
    for (const name of ["guest-link", "suid-sh", "guest-null", "guest-fifo"]) {
      const st = await lstat(join(rwVolume, name));
      expect({ name, file: st.isFile() }).toEqual({ name, file: true });
      expect(st.mode & 0o7000).toBe(0);
      expect(String(st.uid)).toBe(uid);
    }
  });
});

describe("stop", () => {
  it("takes back volume grants and gives the guest's files to the volume's owner", async () => {
    const uid = (await procStatus(await vmPid(PUBLIC)))["Uid"]!.split(/\s+/)[0]!;
    expect((await run("getfacl", ["-cp", rwVolume])).stdout).toContain(`user:${uid}:rwx`);
    await unary(agent.client, "stopVm", { vmId: PUBLIC, timeoutMs: 0, removeDisk: false });
    expect((await run("getfacl", ["-cp", rwVolume])).stdout).not.toContain(`user:${uid}:`);
    expect((await run("getfacl", ["-cp", roVolume])).stdout).not.toContain(`user:${uid}:`);
    expect((await lstat(join(rwVolume, "suid-sh"))).uid).toBe(0);
  });

  it("gives a stopped VM's disk to root: the next VM, given its uid, cannot open it", async () => {
    // Runs after the test above stopped PUBLIC: its uid is free and is the next one out.
    const stoppedDisk = join(vmDir(PUBLIC), "scratch.ext4");
    await createVm("other/next", {});
    const status = await procStatus(await vmPid("other/next"));
    const opened = await run("setpriv", [
      `--reuid=${status["Uid"]!.split(/\s+/)[0]}`,
      `--regid=${status["Gid"]!.split(/\s+/)[0]}`,
      `--groups=${status["Groups"]}`,
      "--",
      "head",
      "-c",
      "1",
      stoppedDisk,
    ]).then(
      () => "read",
      (err: { stderr?: string }) => err.stderr ?? "failed",
    );
    expect(opened).toContain("Permission denied");
    const st = await lstat(stoppedDisk);
    expect([st.uid, st.mode & 0o077]).toEqual([0, 0]);
    await unary(agent.client, "stopVm", { vmId: "other/next", timeoutMs: 0, removeDisk: true });
  });

  it("removes its firewall chain when the vmm-agent stops", async () => {
    const chain = `MSB-PUB-${ID_BASE + 1}`;
    expect(await firewallRules()).toContain(`--gid-owner ${ID_BASE + 1} -j ${chain}`);
    await agent.stop();
    expect(await firewallRules()).not.toContain(chain);
  });
});
