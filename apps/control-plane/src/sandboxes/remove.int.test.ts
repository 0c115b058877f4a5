/* eslint-disable @typescript-eslint/no-unsafe-member-access --
   These tests read parsed JSON bodies (`res.json()` is `any`); the matchers check their shape. */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { MsbError } from "@msb/errors";
import { createHarness, type Harness } from "../test-support/harness.js";

const start = (sandbox = "sb", namespace = "default") => ({
  sandbox,
  namespace,
  config: { image: "microsandbox/python" },
});

const remove = (sandbox = "sb", namespace = "default") => ({ sandbox, namespace, remove: true });

// `sandbox.stop` with `remove: true` (what `msb exe` uses for its temporary sandboxes).
describe("sandbox.stop with remove", () => {
  let h: Harness;
  beforeEach(async () => {
    h = await createHarness({ dev: true });
  });
  afterEach(async () => {
    await h.close();
  });

  it("stops a running sandbox, deletes its disk and its record; it is then not found", async () => {
    await h.rpc("sandbox.start", start());
    const res = await h.rpc("sandbox.stop", remove());
    expect(res.json().result).toBe("Sandbox sb stopped successfully and removed");
    expect(h.vmm.stopped).toEqual(["default/sb"]);
    expect(h.vmm.removedDisks).toEqual(["default/sb"]);
    expect(h.store.get("default", "sb")).toBeUndefined();

    const metrics = await h.rpc("sandbox.metrics.get", { namespace: "default" });
    expect(metrics.json().result).toEqual({ sandboxes: [] });
    const run = await h.rpc("sandbox.command.run", { sandbox: "sb", command: "ls" });
    expect(run.json().error).toMatchObject({ code: -32004, data: { code: "SANDBOX_NOT_FOUND" } });

    // The name is free again: a new start gets a fresh disk.
    await h.rpc("sandbox.start", start());
    expect(h.vmm.created.map((s) => s.keepDisk)).toEqual([false, false]);
  });

  it("removes a stopped sandbox: the vmm-agent still deletes its disk", async () => {
    await h.rpc("sandbox.start", start());
    await h.rpc("sandbox.stop", { sandbox: "sb" });
    expect(h.vmm.removedDisks).toEqual([]);
    const res = await h.rpc("sandbox.stop", remove());
    expect(res.json().result).toBe("Sandbox sb stopped successfully and removed");
    expect(h.vmm.removedDisks).toEqual(["default/sb"]);
    expect(h.store.get("default", "sb")).toBeUndefined();
  });

  it("removes a failed sandbox", async () => {
    h.vmm.failCreateWith = new MsbError("VM_BOOT_FAILED", "QEMU exited: kernel panic.");
    await h.rpc("sandbox.start", start());
    expect(h.store.get("default", "sb")?.state).toBe("failed");
    expect((await h.rpc("sandbox.stop", remove())).json().result).toMatch(/and removed$/);
    expect(h.store.get("default", "sb")).toBeUndefined();
    expect(h.vmm.removedDisks).toEqual(["default/sb"]);
  });

  it("keeps the record when the vmm-agent cannot delete the disk, so a retry can", async () => {
    await h.rpc("sandbox.start", start());
    await h.rpc("sandbox.stop", { sandbox: "sb" });
    h.vmm.down = true;
    const res = await h.rpc("sandbox.stop", remove());
    expect(res.json().error.data.code).toBe("SERVICE_UNAVAILABLE");
    expect(h.store.get("default", "sb")?.state).toBe("stopped");
    h.vmm.down = false;
    expect((await h.rpc("sandbox.stop", remove())).json().result).toMatch(/and removed$/);
    expect(h.store.get("default", "sb")).toBeUndefined();
  });

  it("answers SANDBOX_NOT_FOUND with a next step for a missing sandbox, and for a second remove", async () => {
    const missing = await h.rpc("sandbox.stop", remove("ghost"));
    expect(missing.json().error).toMatchObject({
      code: -32004,
      data: { code: "SANDBOX_NOT_FOUND" },
    });
    expect(missing.json().error.message).toMatch(/Start it with sandbox\.start/);
    expect(h.vmm.stopped).toEqual([]);

    await h.rpc("sandbox.start", start());
    await h.rpc("sandbox.stop", remove());
    const again = await h.rpc("sandbox.stop", remove());
    expect(again.json().error.data.code).toBe("SANDBOX_NOT_FOUND");
  });

  it("removes after a start in flight has settled: calls on one sandbox are serialised", async () => {
    let open!: () => void;
    h.vmm.bootGate = new Promise((resolve) => {
      open = resolve;
    });
    const starting = h.rpc("sandbox.start", start());
    // Until the boot is held at the gate.
    while (h.vmm.created.length === 0) await new Promise((resolve) => setImmediate(resolve));
    expect(h.store.get("default", "sb")?.state).toBe("starting");
    const removing = h.rpc("sandbox.stop", remove());
    open();
    expect((await starting).json().result).toMatch(/started/);
    expect((await removing).json().result).toMatch(/and removed$/);
    expect(h.store.get("default", "sb")).toBeUndefined();
  });

  it("answers SANDBOX_BUSY for a sandbox left starting (a boot the server still tracks)", async () => {
    await h.rpc("sandbox.start", start());
    await h.rpc("sandbox.stop", { sandbox: "sb" });
    const rec = h.store.get("default", "sb")!;
    // A start whose lock is not held here: as after a restart, before reconciliation.
    h.store.apply(
      "default",
      "sb",
      { type: "start" },
      { config: rec.config, configHash: rec.configHash, vmId: rec.vmId },
    );
    const res = await h.rpc("sandbox.stop", remove());
    expect(res.json().error).toMatchObject({ data: { code: "SANDBOX_BUSY", state: "starting" } });
    expect(res.json().error.message).toMatch(/Retry once that has finished/);
    expect(h.store.get("default", "sb")?.state).toBe("starting");
    expect(h.vmm.removedDisks).toEqual([]);
  });

  it("refuses a key of another namespace exactly like stop, and keeps the sandbox", async () => {
    await h.close();
    h = await createHarness();
    const owner = h.key("team-a");
    await h.rpc("sandbox.start", start("sb", "team-a"), { key: owner });
    const res = await h.rpc("sandbox.stop", remove("sb", "team-a"), { key: h.key("team-b") });
    expect(res.statusCode).toBe(403);
    expect(res.json().error).toMatchObject({ code: -32002, data: { code: "AUTH_FORBIDDEN" } });
    expect(h.store.get("team-a", "sb")?.state).toBe("running");
    expect(h.vmm.removedDisks).toEqual([]);
    const ok = await h.rpc("sandbox.stop", remove("sb", "team-a"), { key: owner });
    expect(ok.json().result).toMatch(/and removed$/);
  });

  it("rejects a remove that is not a boolean", async () => {
    const res = await h.rpc("sandbox.stop", { sandbox: "sb", remove: "yes" });
    expect(res.json().error).toMatchObject({ code: -32602, data: { code: "INVALID_PARAMS" } });
  });
});
