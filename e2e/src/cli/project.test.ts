import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  msb,
  rpc,
  startDevServer,
  stopForeground,
  tempHome,
  waitUntil,
  type ForegroundServer,
} from "../server/harness.js";

// The project commands as a user runs them: the built CLI against `msb server start --dev`
// with real VMs. Needs /dev/kvm (or TCG) and the guest kernel/images the server builds.
describe("msb project commands (real server, real VMs)", () => {
  const home = tempHome();
  const project = mkdtempSync(join(tmpdir(), "msb-e2e-project-"));
  let server: ForegroundServer;
  let url = "";
  const cli = (args: readonly string[]) => msb(home.path, args, { MSB_SERVER_URL: url });

  beforeAll(async () => {
    ({ server, url } = await startDevServer(home.path));
  });

  afterAll(async () => {
    await stopForeground(server);
    home.remove();
    rmSync(project, { recursive: true, force: true });
  });

  it("init → add → up --detach → fetch → status → log → down", async () => {
    expect((await cli(["init", "--file", project])).code).toBe(0);
    const add = await cli([
      "add",
      "app",
      "--file",
      project,
      "--image",
      "microsandbox/python",
      "--port",
      "18080:8000",
      "--script",
      "start=python3 -m http.server 8000",
    ]);
    expect(add.code, add.stderr).toBe(0);

    const up = await cli(["up", "--detach", "--file", project]);
    expect(up.code, up.stderr).toBe(0);
    expect(up.stdout).toContain("started app");

    let body = "";
    await waitUntil(
      async () => {
        try {
          const res = await fetch("http://127.0.0.1:18080/");
          body = await res.text();
          return res.ok;
        } catch {
          return false;
        }
      },
      "the sandbox's http.server on host port 18080",
      120_000,
    );
    expect(body).toContain("Directory listing");

    const status = await cli(["status", "--json", "--file", project]);
    expect(status.code, status.stderr).toBe(0);
    expect(JSON.parse(status.stdout)).toMatchObject({
      sandboxes: [
        { name: "app", state: "running", image: "microsandbox/python", ports: ["18080:8000"] },
      ],
    });

    const log = await cli(["log", "app", "--file", project]);
    expect(log.code, log.stderr).toBe(0);
    // http.server logs each request: the fetch above shows up.
    expect(log.stdout).toContain('"GET / HTTP/1.1" 200');

    const down = await cli(["down", "--file", project]);
    expect(down.code, down.stderr).toBe(0);
    const metrics = await rpc(url, "sandbox.metrics.get", { namespace: "default", sandbox: "app" });
    expect(metrics.body).toMatchObject({
      result: { sandboxes: [{ name: "app", running: false }] },
    });
  });

  it("exe prints the command's output and leaves no sandbox running", async () => {
    const exe = await cli(["exe", "microsandbox/python", "--", "python3", "-c", "print(6*7)"]);
    expect(exe.code, exe.stderr).toBe(0);
    expect(exe.stdout).toBe("42\n");
    const metrics = await rpc(url, "sandbox.metrics.get", { namespace: "*" });
    const sandboxes = (
      metrics.body["result"] as { sandboxes: { name: string; running: boolean }[] }
    ).sandboxes;
    expect(sandboxes.filter((s) => s.name.startsWith("exe-") && s.running)).toEqual([]);
  });

  it("exe passes the command's exit code on", async () => {
    const exe = await cli(["exe", "microsandbox/python", "--", "sh", "-c", "exit 3"]);
    expect(exe.code, exe.stderr).toBe(3);
  });
});
