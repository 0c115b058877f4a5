import { describe, expect, it } from "vitest";
import { renderStatus, vmmStatusOf, type StatusReport } from "./status.js";

const report: StatusReport = {
  running: true,
  url: "http://127.0.0.1:5555",
  home: "/home/u/.msb",
  pid: 100,
  dev: true,
  startedAt: "2026-01-01T00:00:00.000Z",
  accelerator: "tcg",
  services: [
    { name: "image-service", pid: 101, running: true },
    { name: "vmm-agent", pid: 102, running: true },
    { name: "control-plane", pid: null, running: false },
  ],
  sandboxes: [
    {
      namespace: "default",
      name: "app",
      running: true,
      cpu_usage: 1.234,
      memory_usage: 85,
      disk_usage: 12 * 1024 * 1024,
      start_kind: "pool",
      boot_ms: 120,
    },
    {
      namespace: "production",
      name: "database",
      running: false,
      cpu_usage: null,
      memory_usage: null,
      disk_usage: null,
    },
  ],
};

describe("renderStatus", () => {
  it("shows the server line, a service table and a sandbox table", () => {
    expect(renderStatus(report)).toBe(
      [
        "msb server running at http://127.0.0.1:5555 (pid 100, dev mode, since 2026-01-01T00:00:00.000Z)",
        "accelerator: tcg   MSB_HOME: /home/u/.msb",
        "",
        "SERVICE        PID  STATE",
        "image-service  101  running",
        "vmm-agent      102  running",
        "control-plane  -    down",
        "",
        "NAMESPACE   NAME      STATUS   START        CPU   MEMORY  DISK",
        "default     app       running  pool 120 ms  1.2%  85 MiB  12.0 MiB",
        "production  database  stopped  -            -     -       -",
        "",
      ].join("\n"),
    );
  });

  it("says why sandboxes are missing instead of showing an empty table", () => {
    const text = renderStatus({
      ...report,
      sandboxes: [],
      sandboxesError: { code: "AUTH_REQUIRED", message: "Set MSB_API_KEY." },
    });
    expect(text).toContain("sandboxes: unavailable (AUTH_REQUIRED): Set MSB_API_KEY.");
    expect(renderStatus({ ...report, sandboxes: [] })).toContain("no sandboxes");
  });
});

const vmmHealth = {
  message: "Service is healthy",
  services: {
    image: { status: "up" },
    vmm: {
      status: "up",
      hypervisor: "qemu",
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
        {
          key: "77b0e2",
          image: "docker.io/microsandbox/node:latest",
          memory_mib: 512,
          vcpus: 1,
          state: "failed",
          reason: "snapshot timed out",
          warm_language: "",
          pool_ready: 0,
          pool_target: 2,
          build_ms: 0,
        },
      ],
    },
  },
};

describe("templates, warm pools and start counters", () => {
  it("reads them from the health body, and nothing from a server that does not send them", () => {
    expect(vmmStatusOf(vmmHealth)?.starts).toEqual({
      pool_hits: 5,
      pool_misses: 1,
      template_restores: 2,
      cold_boots: 1,
    });
    expect(vmmStatusOf(vmmHealth)?.templates).toHaveLength(2);
    expect(
      vmmStatusOf({ services: { vmm: { status: "up", hypervisor: "qemu", note: "" } } }),
    ).toBeUndefined();
    expect(vmmStatusOf({ message: "Service is healthy" })).toBeUndefined();
  });

  it("shows VM counts, counters and a template table with pool fill and failures", () => {
    const text = renderStatus({ ...report, vmm: vmmStatusOf(vmmHealth)! });
    expect(text).toContain("VMs: 3 running (max 24), 1 paused when idle\n");
    expect(text).toContain(
      "starts: 5 from the warm pool, 2 template restores, 1 cold boots (pool misses: 1)\n",
    );
    expect(text).toContain(
      [
        "TEMPLATE  IMAGE                                 MEMORY   CPUS  STATE   WARM    POOL  BUILD",
        "3f9a1c    docker.io/microsandbox/python:latest  512 MiB  1     ready   python  2/2   4.1 s",
        "77b0e2    docker.io/microsandbox/node:latest    512 MiB  1     failed  -       0/2   -",
        "template 77b0e2 failed: snapshot timed out",
      ].join("\n"),
    );
  });

  it("says that every start is a cold boot when there are no templates", () => {
    const text = renderStatus({
      ...report,
      vmm: { vms_running: 0, vms_paused: 0, templates: [] },
    });
    expect(text).toContain("templates: none (every start is a cold boot)");
  });

  it("marks a paused sandbox as paused", () => {
    const text = renderStatus({
      ...report,
      sandboxes: [{ ...report.sandboxes[0]!, paused: true }],
    });
    expect(text).toContain("default    app   paused ");
  });
});
