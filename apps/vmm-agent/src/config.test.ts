import { describe, expect, it } from "vitest";
import { loadConfig } from "./config.js";

describe("loadConfig", () => {
  it("derives every path from MSB_HOME and has defaults for the rest", () => {
    const config = loadConfig({ MSB_HOME: "/srv/msb" });
    expect(config.listenAddress).toBe("unix:/srv/msb/run/vmm-agent.sock");
    expect(config.sandboxesDir).toBe("/srv/msb/sandboxes");
    expect(config.accel).toBe("auto");
    expect(config.maxVms).toBe(64);
    expect(config.defaultDiskQuotaBytes).toBe(1024 * 1024 * 1024);
    expect(config.kernelPath).toBeUndefined();
  });

  it("reads overrides with units", () => {
    const config = loadConfig({
      MSB_HOME: "/h",
      MSB_ACCEL: "tcg",
      MSB_MAX_VMS: "3",
      MSB_DEFAULT_DISK_QUOTA_MIB: "64",
      MSB_VMM_AGENT_ADDR: "127.0.0.1:0",
    });
    expect(config).toMatchObject({
      accel: "tcg",
      maxVms: 3,
      defaultDiskQuotaBytes: 64 * 1024 * 1024,
      listenAddress: "127.0.0.1:0",
    });
  });

  it("turns seccomp on and puts VM uids and gids outside distribution ranges by default", () => {
    const config = loadConfig({});
    expect(config.qemuSeccomp).toBe(true);
    expect(config.vmUidBase).toBeGreaterThanOrEqual(1_900_000_000);
    expect(config.vmUidBase + 65_536).toBeLessThan(2 ** 31);
    expect(config.vmGidBase).toBe(config.vmUidBase);
    expect(loadConfig({ MSB_QEMU_SECCOMP: "off" }).qemuSeccomp).toBe(false);
  });

  it("gives each MSB_HOME its own default id range; explicit bases win", () => {
    const a = loadConfig({ MSB_HOME: "/srv/a" });
    const b = loadConfig({ MSB_HOME: "/srv/b" });
    expect(Math.abs(a.vmUidBase - b.vmUidBase)).toBeGreaterThanOrEqual(65_536);
    expect(loadConfig({ MSB_HOME: "/srv/a/" }).vmUidBase).toBe(a.vmUidBase);
    expect(loadConfig({ MSB_HOME: "/srv/a", MSB_VM_UID_BASE: "7" }).vmUidBase).toBe(7);
  });

  it("rejects invalid values with CONFIG_INVALID naming the variable", () => {
    let error: { code?: string; message?: string } = {};
    try {
      loadConfig({ MSB_ACCEL: "hvf", MSB_MAX_VMS: "-1" });
    } catch (err) {
      error = err as typeof error;
    }
    expect(error.code).toBe("CONFIG_INVALID");
    expect(error.message).toContain("MSB_ACCEL");
    expect(error.message).toContain("MSB_MAX_VMS");
  });

  it("turns templates, the pool and idle pause on by default, and off on request", () => {
    const on = loadConfig({ MSB_HOME: "/srv/msb" });
    expect(on).toMatchObject({
      templatesEnabled: true,
      templatesDir: "/srv/msb/templates",
      poolSize: 1,
      idlePauseMs: 60_000,
    });
    expect(on.templateMemoryDir).toMatch(/^\/dev\/shm\/msb-[0-9a-f]{12}$/);
    expect(loadConfig({ MSB_HOME: "/other" }).templateMemoryDir).not.toBe(on.templateMemoryDir);
    const off = loadConfig({ MSB_TEMPLATES: "0", MSB_POOL_SIZE: "3", MSB_IDLE_PAUSE_SECONDS: "0" });
    expect(off).toMatchObject({ templatesEnabled: false, poolSize: 0, idlePauseMs: 0 });
    expect(loadConfig({ MSB_POOL_SIZE: "3" }).poolSize).toBe(3);
  });
});
