import { execFile } from "node:child_process";
import { mkdir, readdir, rename, symlink, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, expect, it } from "vitest";
import { NetworkMode } from "@msb/proto";
import {
  createVm as createTestVm,
  exec,
  guestEnv,
  prepare,
  rejection,
  startVmmAgent,
  stopAndCheckClean,
  unary,
  type GuestArtifacts,
  type VmmAgentProcess,
} from "./harness.js";

// Issue 12, item 1: a sandbox started with an allowed volume, stopped, its volume directory
// replaced by a symlink to a directory outside the roots, then started again with the same
// (stored) config. The vmm-agent must not follow the link: no grant lands on the target and
// the VM does not start. See docs/security.md.

const run = promisify(execFile);
const VM = "swap/victim";
const ID_BASE = 1_900_500_000;

let root: string;
let agent: VmmAgentProcess;
let artifacts: GuestArtifacts;

function createVm(volume: string): Promise<unknown> {
  return createTestVm(agent.client, artifacts.rootfsPath, VM, {
    volumes: [{ hostPath: volume, guestPath: "/mnt/data", readOnly: false }],
    network: NetworkMode.NETWORK_MODE_NONE,
    bootTimeoutMs: 240_000,
    keepDisk: true,
  });
}

beforeAll(async () => {
  ({ artifacts, root } = await prepare("msb-e2e-volswap-"));
  await mkdir(join(root, "allowed", "data"), { recursive: true });
  await mkdir(join(root, "outside"));
  await writeFile(join(root, "outside", "secret.txt"), "host secret\n", { mode: 0o600 });
  // MSB_HOME inside the roots: it stays refused all the same.
  agent = await startVmmAgent(join(root, "allowed", "home"), {
    ...guestEnv(artifacts),
    MSB_ACCEL: "tcg",
    MSB_TEMPLATES: "0",
    MSB_VM_UID_BASE: String(ID_BASE),
    MSB_VM_GID_BASE: String(ID_BASE),
    MSB_VOLUME_ROOTS: join(root, "allowed"),
  });
});

afterAll(() => stopAndCheckClean(agent, root));

it("grants nothing on a directory outside the roots that a volume's path was swapped for", async () => {
  const volume = join(root, "allowed", "data");
  await createVm(volume);
  const ok = await exec(agent.client, { vmId: VM, command: "ls", args: ["/mnt/data"] });
  expect(ok.result.exitCode).toBe(0);
  await unary(agent.client, "stopVm", { vmId: VM, timeoutMs: 0, removeDisk: false });

  await rename(volume, join(root, "allowed", "data.old"));
  await symlink(join(root, "outside"), volume);
  const err = await rejection(createVm(volume));
  expect(err.code).toBe("POLICY_DENIED");
  expect((await run("getfacl", ["-cp", join(root, "outside")])).stdout).not.toMatch(/^user:\d+/m);
  expect(await readdir(join(root, "outside"))).toEqual(["secret.txt"]);
});

it("refuses a volume inside MSB_HOME even when the roots contain it", async () => {
  const err = await rejection(
    createTestVm(agent.client, artifacts.rootfsPath, "swap/home", {
      volumes: [
        {
          hostPath: join(root, "allowed", "home", "sandboxes"),
          guestPath: "/mnt/h",
          readOnly: true,
        },
      ],
      network: NetworkMode.NETWORK_MODE_NONE,
    }),
  );
  expect(err.code).toBe("POLICY_DENIED");
});
