import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, expect, it } from "vitest";
import type { GetHostInfoResponse } from "@msb/proto";
import { buildVmmAgent, startVmmAgent, unary, type VmmAgentProcess } from "./harness.js";

// Issue 12 ("confirm or refute"): two servers with default settings on one host. They shared
// the VM uid range (a VM of one could open the other's VM disks under the same uid) and one
// firewall chain (stopping one removed the other's `public` rules). Each home now gets a range
// of its own by default, and a range another live vmm-agent holds is refused at start.

const run = promisify(execFile);
const isRoot = process.getuid?.() === 0;

let root: string;
const agents: VmmAgentProcess[] = [];
/** The environment without any id setting: the defaults are under test. */
const env: Record<string, string> = { MSB_ACCEL: "tcg", MSB_TEMPLATES: "0" };
for (const name of ["MSB_VM_UID_BASE", "MSB_VM_GID_BASE", "MSB_VM_UID_COUNT"]) {
  delete process.env[name];
}

async function uidRange(agent: VmmAgentProcess): Promise<string> {
  const info = await unary<object, GetHostInfoResponse>(agent.client, "getHostInfo", {});
  return /\((\d+-\d+)\)/.exec(info.isolation?.qemuUser ?? "")?.[1] ?? "none";
}

async function chains(): Promise<string[]> {
  const { stdout } = await run("iptables", ["-S"]);
  return [...new Set(stdout.match(/MSB-PUB-\d+/g) ?? [])];
}

beforeAll(async () => {
  await buildVmmAgent();
  root = await mkdtemp(join(tmpdir(), "msb-e2e-two-"));
});

afterAll(async () => {
  for (const agent of agents) await agent.stop();
  if (root !== undefined) await rm(root, { recursive: true, force: true });
});

it.skipIf(!isRoot)(
  "gives two servers with default settings their own VM uids and firewall chain",
  async () => {
    const before = await chains();
    const a = await startVmmAgent(join(root, "a"), env);
    agents.push(a);
    const b = await startVmmAgent(join(root, "b"), env);
    agents.push(b);
    const [rangeA, rangeB] = [await uidRange(a), await uidRange(b)];
    expect(rangeA).not.toBe(rangeB);
    const [startA, endA] = rangeA.split("-").map(Number) as [number, number];
    const [startB, endB] = rangeB.split("-").map(Number) as [number, number];
    expect(endA < startB || endB < startA).toBe(true);
    const both = (await chains()).filter((c) => !before.includes(c));
    expect(both).toHaveLength(2);
    // Stopping one server leaves the other's `public` rules in place.
    await b.stop();
    expect(await chains()).toEqual(
      expect.arrayContaining(both.filter((c) => c !== `MSB-PUB-${startB + 1}`)),
    );
    expect((await chains()).filter((c) => !before.includes(c))).toHaveLength(1);
  },
);

it.skipIf(!isRoot)("refuses to start on a uid range another live vmm-agent holds", async () => {
  const a = agents[0]!;
  const [start] = (await uidRange(a)).split("-").map(Number) as [number];
  const clash = startVmmAgent(join(root, "c"), {
    ...env,
    MSB_VM_UID_BASE: String(start + 10),
    MSB_VM_GID_BASE: String(start + 100_000),
  });
  const outcome = await clash.then(
    async (started) => {
      await started.stop();
      return "started";
    },
    (err: Error) => err.message,
  );
  expect(outcome).toContain("CONFIG_INVALID");
  expect(outcome).toContain(`overlap those of the vmm-agent of ${join(root, "a")}`);
});
