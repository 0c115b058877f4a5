import { execFile } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { createLogger } from "@msb/runtime";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { installNetworkPolicy } from "./policy.js";

const run = promisify(execFile);
const logger = createLogger({ name: "policy-test", level: "silent" });
const isRoot = process.getuid?.() === 0;
const GID = 1_900_500_001;

async function rules(): Promise<string> {
  const [v4, v6] = await Promise.all([run("iptables", ["-S"]), run("ip6tables", ["-S"])]);
  return `${v4.stdout}\n${v6.stdout}`;
}

describe("installNetworkPolicy", () => {
  let dir: string;
  let resolvConfPath: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "msb-policy-"));
    resolvConfPath = join(dir, "resolv.conf");
    await writeFile(resolvConfPath, "nameserver 10.255.255.53\nnameserver fd00::53\n");
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("says it does not enforce when the vmm-agent is not root", async () => {
    const policy = await installNetworkPolicy({ privileged: false, publicGid: GID, logger });
    expect(policy.status.enforced).toBe(false);
    expect(policy.status.note).toContain("does not run as root");
  });

  it("says it does not enforce, and why, when iptables is missing", async () => {
    const policy = await installNetworkPolicy({
      privileged: true,
      publicGid: GID,
      logger,
      resolvConfPath,
      binaries: { v4: join(dir, "no-iptables"), v6: join(dir, "no-ip6tables") },
    });
    expect(policy.status).toEqual({
      enforced: false,
      note: "not enforced: iptables failed: iptables is not installed (Debian package iptables)",
    });
  });

  // Real netfilter: needs root and the iptables package (tools/setup.sh installs it).
  it.skipIf(!isRoot)(
    "installs one chain for the public gid, idempotently, and removes it",
    async () => {
      const first = await installNetworkPolicy({
        privileged: true,
        publicGid: GID,
        logger,
        resolvConfPath,
      });
      try {
        expect(first.status).toEqual({ enforced: true, note: "" });
        // A second start (after a crash) neither fails nor duplicates anything.
        const second = await installNetworkPolicy({
          privileged: true,
          publicGid: GID,
          logger,
          resolvConfPath,
        });
        expect(second.status.enforced).toBe(true);
        const text = await rules();
        const jumps = text
          .split("\n")
          .filter((l) => l.includes(`--gid-owner ${GID} -j MSB-PUB-${GID}`));
        expect(jumps).toHaveLength(2); // one in iptables, one in ip6tables
        expect(text).toContain(
          `-A MSB-PUB-${GID} -d 10.255.255.53/32 -p udp -m udp --dport 53 -j ACCEPT`,
        );
        expect(text).toContain(
          `-A MSB-PUB-${GID} -d fd00::53/128 -p tcp -m tcp --dport 53 -j ACCEPT`,
        );
      } finally {
        await first.remove();
      }
      expect(await rules()).not.toContain(`MSB-PUB-${GID}`);
    },
  );
});
