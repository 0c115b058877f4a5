import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { parseSandboxfile } from "../../project/sandboxfile.js";
import { runMsb } from "../../testing/cli-harness.js";
import { parseTarget } from "../sandbox/run.js";
import { entryFromOptions } from "./add.js";
import { formatUptime, renderStatusRows, statusRows } from "./status.js";

const dir = () => mkdtempSync(join(tmpdir(), "msb-project-"));

describe("project commands against the file", () => {
  it("init writes a starter file and refuses to overwrite it", async () => {
    const d = dir();
    const first = await runMsb(["init", "--file", d]);
    expect(first.code).toBe(0);
    expect(first.stdout).toContain(`created ${d}/Sandboxfile`);
    const again = await runMsb(["init", "--file", d]);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain("already exists");
  });

  it("add, list and remove round-trip through the file", async () => {
    const d = dir();
    await runMsb(["init", "--file", d]);
    const add = await runMsb([
      "add",
      "app",
      "--file",
      d,
      "--image",
      "microsandbox/python",
      "--port",
      "18080:8000",
      "--env",
      "A=1",
      "--volume",
      "./data:/data",
      "--memory",
      "256",
      "--cpus",
      "2",
      "--workdir",
      "/app",
      "--script",
      "start=python3 -m http.server 8000",
      "--script",
      "test=pytest",
    ]);
    expect(add.code).toBe(0);
    await runMsb(["add", "web", "--file", d, "--image", "nginx", "--depends-on", "app"]);
    const project = parseSandboxfile(
      readFileSync(join(d, "Sandboxfile"), "utf8"),
      join(d, "Sandboxfile"),
    );
    expect(project.sandboxes[0]).toMatchObject({
      name: "app",
      memory: 256,
      cpus: 2,
      volumes: [`${d}/data:/data`],
      envs: ["A=1"],
      workdir: "/app",
      scripts: { start: "python3 -m http.server 8000", test: "pytest" },
    });
    const list = await runMsb(["list", "--file", d]);
    expect(list.stdout).toMatch(/^NAME\s+IMAGE\s+MEMORY\s+CPUS\s+PORTS\s+DEPENDS ON\s+SCRIPTS\n/);
    expect(list.stdout).toMatch(
      /app\s+microsandbox\/python\s+256 MiB\s+2\s+18080:8000\s+-\s+start,test/,
    );
    const json = JSON.parse((await runMsb(["list", "--json", "--file", d])).stdout) as {
      sandboxes: { name: string }[];
    };
    expect(json.sandboxes.map((s) => s.name)).toEqual(["app", "web"]);
    expect((await runMsb(["remove", "app", "--file", d])).stderr).toContain('"web" depends on app');
    expect((await runMsb(["remove", "web", "app", "--file", d])).code).toBe(0);
    expect((await runMsb(["list", "--file", d])).stdout).toContain("no sandboxes");
  });

  it("refuses bad flags with exit 2", async () => {
    const d = dir();
    await runMsb(["init", "--file", d]);
    for (const args of [
      ["add", "app", "--image", "x", "--port", "80"],
      ["add", "app", "--image", "x", "--env", "=1"],
      ["add", "app", "--image", "x", "--memory", "0"],
      ["add", "app", "--image", "x", "--volume", "data"],
      ["add", "app", "--image", "x", "--depends-on", "nope"],
      ["add", "-bad", "--image", "x"],
      ["add", "app"],
      ["run", "app~a~b"],
      ["up", "--namespace", "bad name"],
    ]) {
      const r = await runMsb([...args, "--file", d]);
      expect(r.code, args.join(" ")).toBe(2);
    }
  });

  it("names the file and line of an invalid Sandboxfile, as JSON too", async () => {
    const d = dir();
    writeFileSync(join(d, "Sandboxfile"), "sandboxes:\n  app:\n    image: x\n    cpu: 2\n");
    const r = await runMsb(["--json", "status", "--file", d]);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stderr)).toMatchObject({
      error: { code: "SANDBOXFILE_INVALID", details: { line: 4, field: "sandboxes.app.cpu" } },
    });
  });

  it("without a Sandboxfile says to run init", async () => {
    const r = await runMsb(["up", "--file", join(dir(), "Sandboxfile")]);
    expect(r.code).toBe(4);
    expect(r.stderr).toContain("msb init");
  });

  it("says how to start the server when it is not running", async () => {
    const d = dir();
    await runMsb(["init", "--file", d]);
    await runMsb(["add", "app", "--file", d, "--image", "x"]);
    const r = await runMsb(["up", "--file", d], { env: { MSB_SERVER_URL: "http://127.0.0.1:9" } });
    expect(r.code).toBe(10);
    expect(r.stderr).toContain("msb server start --dev");
    expect(r.stderr).not.toContain("    at ");
  });

  it("every command has help with examples", async () => {
    for (const verb of [
      "init",
      "add",
      "remove",
      "list",
      "up",
      "apply",
      "down",
      "status",
      "run",
      "log",
      "exe",
      "shell",
    ]) {
      const r = await runMsb([verb, "--help"]);
      expect(r.code, verb).toBe(0);
      expect(r.stdout, verb).toContain("Examples:");
    }
  });
});

describe("argument parsing", () => {
  it("run targets", () => {
    expect(parseTarget("app")).toEqual({ name: "app", script: "start" });
    expect(parseTarget("app~test")).toEqual({ name: "app", script: "test" });
    expect(() => parseTarget("app~")).toThrow();
  });

  it("add entries keep documentation order and split scripts at the first =", () => {
    const entry = entryFromOptions({ image: "x", script: ["start=a=b c"], port: ["1:2"], cpus: 2 });
    expect(Object.keys(entry)).toEqual(["image", "cpus", "ports", "scripts"]);
    expect(entry.scripts).toEqual({ start: "a=b c" });
  });
});

describe("status output", () => {
  const project = parseSandboxfile(
    "sandboxes:\n  app:\n    image: py\n    ports: ['18080:8000']\n  db:\n    image: pg\n",
    "/p/Sandboxfile",
  );
  const now = new Date("2024-01-01T01:00:00Z");
  const rows = statusRows(
    project,
    [
      {
        namespace: "default",
        name: "app",
        config: { image: "py", volumes: [], ports: [], envs: [], scripts: {} },
        startedAt: "2024-01-01T00:58:55Z",
      },
      {
        namespace: "default",
        name: "gone",
        config: { image: "old", volumes: [], ports: [], envs: [], scripts: {} },
        startedAt: "2024-01-01T00:00:00Z",
      },
    ],
    [
      {
        namespace: "default",
        name: "app",
        running: true,
        cpu_usage: 1.25,
        memory_usage: 85,
        disk_usage: 2048,
        state: "running",
      },
    ],
    "default",
    now,
  );

  it("joins file, state and metrics", () => {
    expect(rows).toMatchObject([
      {
        name: "app",
        state: "running",
        cpu_usage: 1.25,
        memory_usage: 85,
        ports: ["18080:8000"],
        uptime_s: 65,
        orphan: false,
      },
      { name: "db", state: "not started", uptime_s: null },
      { name: "gone", state: "not started", image: "old", orphan: true },
    ]);
  });

  it("renders a table", () => {
    const text = renderStatusRows(rows);
    expect(text.split("\n")[0]).toMatch(
      /^NAME\s+STATE\s+IMAGE\s+CPU\s+MEMORY\s+DISK\s+PORTS\s+UPTIME$/,
    );
    expect(text).toMatch(/app\s+running\s+py\s+1\.3%\s+85 MiB\s+2\.0 KiB\s+18080:8000\s+1m5s/);
    expect(text).toContain("gone (removed from file)");
    expect(formatUptime(90_061)).toBe("1d1h");
  });
});
