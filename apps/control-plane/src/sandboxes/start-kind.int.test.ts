/* eslint-disable @typescript-eslint/no-unsafe-member-access --
   These tests read parsed JSON bodies (`res.json()` is `any`); the matchers check their shape. */
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { createHarness, type Harness } from "../test-support/harness.js";

// How a sandbox's VM was started (cold boot, template restore, warm pool) and the vmm agent's
// templates and counters, as clients see them: sandbox.start with `details`, metrics, health.
const PY = { image: "microsandbox/python", memory: 512, cpus: 1 };

describe("start kind and boot time", () => {
  let h: Harness;
  beforeEach(async () => {
    h = await createHarness({ dev: true });
  });
  afterEach(async () => {
    await h.close();
  });

  it("keeps the SPEC's sentence unless details are asked for", async () => {
    h.vmm.nextStart = { startKind: "pool", bootMs: 42 };
    const res = await h.rpc("sandbox.start", { sandbox: "sb", config: PY });
    expect(res.json().result).toBe("Sandbox sb started successfully");
  });

  it("answers details with the start kind and boot time the vmm agent reported", async () => {
    h.vmm.nextStart = { startKind: "pool", bootMs: 42 };
    const first = await h.rpc("sandbox.start", { sandbox: "sb", config: PY, details: true });
    expect(first.statusCode).toBe(200);
    expect(first.json().result).toEqual({
      message: "Sandbox sb started successfully",
      namespace: "default",
      sandbox: "sb",
      image: "microsandbox/python",
      already_running: false,
      start_kind: "pool",
      boot_ms: 42,
    });
    // An idempotent start reports how the running VM was started, not a new start.
    h.vmm.nextStart = { startKind: "cold", bootMs: 900 };
    const again = await h.rpc("sandbox.start", { sandbox: "sb", config: PY, details: true });
    expect(again.json().result).toMatchObject({
      already_running: true,
      start_kind: "pool",
      boot_ms: 42,
    });
    expect(h.vmm.created).toHaveLength(1);
  });

  it("says null, never a guess, when the vmm agent does not report the start kind", async () => {
    const res = await h.rpc("sandbox.start", { sandbox: "sb", config: PY, details: true });
    expect(res.json().result).toMatchObject({ start_kind: null, boot_ms: null });
  });

  it("refuses a details flag that is not a boolean", async () => {
    const res = await h.rpc("sandbox.start", { sandbox: "sb", config: PY, details: "yes" });
    expect(res.statusCode).toBe(400);
    expect(res.json().error.data.issues).toEqual([
      { field: "details", message: "must be true or false" },
    ]);
    expect(h.vmm.created).toHaveLength(0);
  });

  it("lists start kind, boot time and pause state in metrics, null once stopped", async () => {
    h.vmm.nextStart = { startKind: "template", bootMs: 130, paused: true };
    await h.rpc("sandbox.start", { sandbox: "a", config: PY });
    h.vmm.nextStart = { startKind: "cold", bootMs: 1500 };
    await h.rpc("sandbox.start", { sandbox: "b", config: PY });
    await h.rpc("sandbox.stop", { sandbox: "b" });

    const res = await h.rpc("sandbox.metrics.get", { namespace: "default" });
    const byName = Object.fromEntries(
      (res.json().result.sandboxes as { name: string }[]).map((s) => [s.name, s]),
    );
    expect(byName["a"]).toMatchObject({
      running: true,
      start_kind: "template",
      boot_ms: 130,
      paused: true,
    });
    expect(byName["b"]).toMatchObject({
      running: false,
      start_kind: null,
      boot_ms: null,
      paused: false,
    });
  });
});

describe("health with templates and start counters", () => {
  let h: Harness;
  beforeEach(async () => {
    h = await createHarness();
  });
  afterEach(async () => {
    await h.close();
  });

  it("shows the vmm agent's templates, pool fill, start counters and paused VMs", async () => {
    h.vmm.hostExtras = {
      vmsRunning: 3,
      maxVms: 24,
      vmsPaused: 1,
      starts: { poolHits: 5, poolMisses: 1, templateRestores: 2, coldBoots: 1 },
      templates: [
        {
          key: "3f9a1c",
          imageReference: "docker.io/microsandbox/python:latest",
          memoryMib: 512,
          vcpus: 1,
          state: "ready",
          reason: "",
          warmLanguage: "python",
          poolReady: 2,
          poolTarget: 2,
          buildMs: 4100,
        },
      ],
    };
    // Details are for key holders (issue 12: health without a key is minimal).
    const res = await h.app.inject({
      method: "GET",
      url: "/api/v1/health",
      headers: { authorization: `Bearer ${h.key("*")}` },
    });
    expect(res.statusCode).toBe(200);
    expect(res.json().message).toBe("Service is healthy");
    expect(res.json().services.vmm).toEqual({
      status: "up",
      hypervisor: "qemu",
      note: "",
      isolation: {
        seccomp: true,
        qemuUser: "qemu runs as the server's user",
        networkPolicyEnforced: false,
        networkPolicyNote: "not enforced: the vmm-agent does not run as root",
      },
      vms_running: 3,
      max_vms: 24,
      vms_paused: 1,
      starts: { pool_hits: 5, pool_misses: 1, template_restores: 2, cold_boots: 1 },
      templates: [
        {
          key: "3f9a1c",
          image: "docker.io/microsandbox/python:latest",
          memory_mib: 512,
          vcpus: 1,
          state: "ready",
          reason: "",
          warm_language: "python",
          pool_ready: 2,
          pool_target: 2,
          build_ms: 4100,
        },
      ],
    });
  });
});
