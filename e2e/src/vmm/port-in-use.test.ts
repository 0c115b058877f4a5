import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type AddressInfo, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, expect, it } from "vitest";
import { CreateVmRequest, NetworkMode, type ListVmsResponse } from "@msb/proto";
import {
  buildVmmAgent,
  qemuPidsMentioning,
  rejection,
  startVmmAgent,
  unary,
  type VmmAgentProcess,
} from "./harness.js";

// Issue 12 ("wrong answers"): a host port already taken by another process answered
// VM_BOOT_FAILED/500 "connection to the guest agent was lost" after a VM had started. It must
// be PORT_IN_USE naming the port, before any VM starts. No guest is needed to show it: the
// kernel and image here are placeholders that would fail any boot that got that far.

let root: string;
let agent: VmmAgentProcess;
let busy: Server;
let busyPort: number;

beforeAll(async () => {
  await buildVmmAgent();
  root = await mkdtemp(join(tmpdir(), "msb-e2e-portinuse-"));
  for (const name of ["vmlinux", "initramfs", "rootfs.erofs"]) {
    await writeFile(join(root, name), "not a real guest artifact");
  }
  busy = createServer();
  await new Promise<void>((resolve) => busy.listen(0, "127.0.0.1", resolve));
  busyPort = (busy.address() as AddressInfo).port;
  agent = await startVmmAgent(join(root, "home"), {
    MSB_KERNEL: join(root, "vmlinux"),
    MSB_INITRAMFS: join(root, "initramfs"),
    MSB_ACCEL: "tcg",
    MSB_TEMPLATES: "0",
  });
});

afterAll(async () => {
  await agent?.stop();
  busy?.close();
  if (root !== undefined) {
    expect(await qemuPidsMentioning(root)).toEqual([]);
    await rm(root, { recursive: true, force: true });
  }
});

it("refuses a host port another process holds with PORT_IN_USE naming it, before any VM starts", async () => {
  const err = await rejection(
    unary(
      agent.client,
      "createVm",
      CreateVmRequest.fromPartial({
        vmId: "ports/a",
        rootfsPath: join(root, "rootfs.erofs"),
        network: NetworkMode.NETWORK_MODE_PUBLIC,
        ports: [{ hostPort: busyPort, guestPort: 80, protocol: "tcp", hostAddress: "" }],
        bootTimeoutMs: 30_000,
      }),
    ),
  );
  expect({ code: err.code, namesPort: err.message.includes(String(busyPort)) }).toEqual({
    code: "PORT_IN_USE",
    namesPort: true,
  });
  const { vms } = await unary<object, ListVmsResponse>(agent.client, "listVms", {});
  expect(vms.filter((v) => v.pid > 0)).toEqual([]);
});
