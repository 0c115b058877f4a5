import { describe, expect, it } from "vitest";
import { renderStatus, type StatusReport } from "./status.js";

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
        "NAMESPACE   NAME      STATUS   CPU   MEMORY  DISK",
        "default     app       running  1.2%  85 MiB  12.0 MiB",
        "production  database  stopped  -     -       -",
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
