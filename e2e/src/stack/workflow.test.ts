// The manual's workflow, end to end, the way a new user runs it: `msb server start --dev` on a
// free port, then plain JSON-RPC over HTTP (start → repl.run → command.run → metrics → stop),
// the two-call "Hello World!" REPL example in Python and Node, an MCP client that lists the
// tools and prompts and runs code, and `msb server stop` leaving no VM behind. Real VMs.
import { execFile } from "node:child_process";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { promisify } from "node:util";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  msb,
  processesMentioning,
  rpc,
  startDevServer,
  tempHome,
  waitUntil,
  type ForegroundServer,
} from "../server/harness.js";

const home = tempHome();
let url = "";
let server: ForegroundServer;

interface RunResult {
  status: string;
  output: { stream: string; text: string }[];
  error?: { type: string };
}

async function ok<T>(method: string, params: unknown): Promise<T> {
  const { status, body } = await rpc(url, method, params);
  expect(body.error, `${method}: ${JSON.stringify(body.error)}`).toBeUndefined();
  expect(status).toBe(200);
  return body.result as T;
}

const stdout = (r: RunResult): string =>
  r.output
    .filter((o) => o.stream === "stdout")
    .map((o) => o.text)
    .join("\n");

beforeAll(async () => {
  ({ server, url } = await startDevServer(home.path));
}, 900_000);

afterAll(async () => {
  if (server.child.exitCode === null) await msb(home.path, ["server", "stop"]);
  home.remove();
});

describe("the manual's JSON-RPC workflow against a real server", () => {
  it("answers health without a key", async () => {
    const res = await fetch(`${url}/api/v1/health`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { message: string; accelerator: string };
    expect(body.message).toBe("Service is healthy");
    expect(["tcg", "kvm"]).toContain(body.accelerator);
  });

  it("starts a Python sandbox, keeps REPL state, runs commands, reports metrics, stops", async () => {
    const params = { sandbox: "my-env", namespace: "default" };
    expect(
      await ok<string>("sandbox.start", {
        ...params,
        config: { image: "microsandbox/python", memory: 512, envs: ["GREETING=hi"] },
      }),
    ).toBe("Sandbox my-env started successfully");

    await ok<RunResult>("sandbox.repl.run", {
      ...params,
      language: "python",
      code: "name = 'World'",
    });
    const hello = await ok<RunResult>("sandbox.repl.run", {
      ...params,
      language: "python",
      code: "print(f'Hello {name}!')",
    });
    expect(hello.status).toBe("success");
    expect(stdout(hello)).toBe("Hello World!");

    const failing = await ok<RunResult>("sandbox.repl.run", {
      ...params,
      language: "python",
      code: "raise ValueError('boom')",
    });
    expect(failing.status).toBe("error");
    expect(failing.output.some((o) => o.stream === "stderr" && o.text.includes("ValueError"))).toBe(
      true,
    );

    const ls = await ok<{ exit_code: number; success: boolean; output: { text: string }[] }>(
      "sandbox.command.run",
      { ...params, command: "ls", args: ["-la", "/workspace"] },
    );
    expect(ls.exit_code).toBe(0);
    expect(ls.success).toBe(true);

    const env = await ok<{ output: { text: string }[] }>("sandbox.command.run", {
      ...params,
      command: "sh",
      args: ["-c", "echo $GREETING; exit 3"],
    });
    expect(env).toMatchObject({ exit_code: 3, success: false });
    expect(env.output.map((o) => o.text)).toContain("hi");

    const metrics = await ok<{
      sandboxes: { name: string; running: boolean; memory_usage: number }[];
    }>("sandbox.metrics.get", params);
    expect(metrics.sandboxes).toHaveLength(1);
    expect(metrics.sandboxes[0]).toMatchObject({ name: "my-env", running: true });
    expect(metrics.sandboxes[0]!.memory_usage).toBeGreaterThan(0);

    expect(await ok<string>("sandbox.stop", params)).toBe("Sandbox my-env stopped successfully");
    const after = await rpc(url, "sandbox.repl.run", { ...params, language: "python", code: "1" });
    expect((after.body.error as { code: number }).code).toBe(-32004);
  });

  it("keeps Node REPL state between calls, with top-level await", async () => {
    const params = { sandbox: "node-env", namespace: "default" };
    await ok("sandbox.start", { ...params, config: { image: "microsandbox/node" } });
    await ok("sandbox.repl.run", { ...params, language: "nodejs", code: "var name = 'World'" });
    const hello = await ok<RunResult>("sandbox.repl.run", {
      ...params,
      language: "javascript",
      code: "console.log(`Hello ${name}!`); console.log(await Promise.resolve(6 * 7));",
    });
    expect(hello.status).toBe("success");
    expect(stdout(hello)).toBe("Hello World!\n42");
    await ok("sandbox.stop", params);
  });

  it("reads a 6 MiB guest file whole (over gRPC's 4 MiB message limit) and writes one back", async () => {
    const params = { sandbox: "big-files", namespace: "default" };
    await ok("sandbox.start", { ...params, config: { image: "microsandbox/python" } });
    const made = await ok<{ exit_code: number; output: { text: string }[] }>(
      "sandbox.command.run",
      {
        ...params,
        command: "sh",
        args: ["-c", "head -c 6291456 /dev/urandom > /tmp/big && sha256sum /tmp/big"],
      },
    );
    expect(made.exit_code).toBe(0);
    const guestSum = made.output
      .map((o) => o.text)
      .join("")
      .split(" ")[0];
    const read = await ok<{ data: string; size: number; truncated: boolean }>(
      "sandbox.files.read",
      { ...params, path: "/tmp/big" },
    );
    expect(read).toMatchObject({ size: 6291456, truncated: false });
    const bytes = Buffer.from(read.data, "base64");
    expect(createHash("sha256").update(bytes).digest("hex")).toBe(guestSum);
    // And back (the request body caps a write at 10 MiB of base64): 5 MiB arrives intact.
    const five = bytes.subarray(0, 5 * 1024 * 1024);
    await ok("sandbox.files.write", {
      ...params,
      path: "/tmp/back",
      data: five.toString("base64"),
    });
    const back = await ok<{ output: { text: string }[] }>("sandbox.command.run", {
      ...params,
      command: "sha256sum",
      args: ["/tmp/back"],
    });
    expect(
      back.output
        .map((o) => o.text)
        .join("")
        .split(" ")[0],
    ).toBe(createHash("sha256").update(five).digest("hex"));
    await ok("sandbox.stop", { ...params, remove: true });
  });

  it("runs the README's curl example as written (port aside)", async () => {
    const readme = readFileSync(new URL("../../../README.md", import.meta.url), "utf8");
    const block = /<!-- readme-example: rpc -->\s*```bash\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(block, "README example block").toBeDefined();
    const script = block!.replaceAll("127.0.0.1:5555", new URL(url).host);
    const { stdout } = await promisify(execFile)("bash", ["-ec", script]);
    const answers = stdout
      .trim()
      .split("\n")
      .map((line) => JSON.parse(line) as { result?: unknown; error?: unknown });
    expect(answers.map((a) => a.error)).toEqual([undefined, undefined, undefined]);
    expect(answers[0]!.result).toBe("Sandbox my-env started successfully");
    expect(stdout).toContain("Hello from API!");
    expect(answers[2]!.result).toBe("Sandbox my-env stopped successfully");
  });

  it("serves MCP: tools, prompts, and code that really runs", async () => {
    const client = new Client({ name: "e2e", version: "1.0.0" });
    await client.connect(new StreamableHTTPClientTransport(new URL(`${url}/mcp`)));
    try {
      const tools = (await client.listTools()).tools.map((t) => t.name).sort();
      expect(tools).toEqual(
        expect.arrayContaining([
          "sandbox_get_metrics",
          "sandbox_run_code",
          "sandbox_run_command",
          "sandbox_start",
          "sandbox_stop",
        ]),
      );
      const prompts = (await client.listPrompts()).prompts.map((p) => p.name);
      expect(prompts).toEqual(
        expect.arrayContaining(["create_python_sandbox", "create_node_sandbox"]),
      );
      const sandbox = { sandbox: "mcp-env", namespace: "default" };
      const started = await client.callTool({
        name: "sandbox_start",
        arguments: { ...sandbox, config: { image: "microsandbox/python" } },
      });
      expect(started.isError ?? false).toBe(false);
      const ran = await client.callTool({
        name: "sandbox_run_code",
        arguments: { ...sandbox, language: "python", code: "print(5*5)" },
      });
      expect(ran.isError ?? false).toBe(false);
      expect(JSON.stringify(ran.content)).toContain("25");
      const missing = await client.callTool({
        name: "sandbox_run_code",
        arguments: { sandbox: "does-not-exist", language: "python", code: "1" },
      });
      expect(missing.isError).toBe(true);
      expect(JSON.stringify(missing.content)).toContain("SANDBOX_NOT_FOUND");
    } finally {
      await client.close();
    }
  });

  it("`msb server stop` leaves no VM and no service process behind", async () => {
    // mcp-env is still running: stop must take it down too.
    const stopped = await msb(home.path, ["server", "stop"]);
    expect(stopped.code, stopped.stderr).toBe(0);
    await server.exited;
    await waitUntil(() => processesMentioning(home.path).length === 0, "processes to go");
    expect(processesMentioning(home.path)).toEqual([]);
  });
});
