/// <reference lib="esnext.disposable" />
import { execFile } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";
import { promisify } from "node:util";
import {
  FilesUnsupportedError,
  NodeSandbox,
  PythonSandbox,
  RpcClient,
  SandboxNotFoundError,
  TimeoutError,
} from "microsandbox";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT, startTestServer, type TestServer } from "./msb-server.js";

// The SDKs and the manual's examples against a real msb server and real VMs: the server from
// MSB_TEST_SERVER_URL, or one started here with `msb server start --dev` (msb-server.ts).

const run = promisify(execFile);
let server: TestServer | undefined;
let skipReason = "server not started";

beforeAll(async () => {
  const started = await startTestServer();
  server = started.server;
  if (started.skip !== undefined) skipReason = started.skip;
}, 900_000);

afterAll(async () => {
  await server?.stop();
});

interface Ctx {
  skip(note?: string): never;
}

function need(ctx: Ctx): TestServer {
  if (server === undefined) ctx.skip(skipReason);
  return server;
}

const unique = (prefix: string) => `${prefix}-${randomUUID().slice(0, 8)}`;

describe("TypeScript SDK", () => {
  it("keeps REPL state and reports errors, timeouts, commands and metrics truthfully", async (ctx) => {
    const { url, apiKey } = need(ctx);
    await using sb = await PythonSandbox.create({ name: unique("ts-py"), serverUrl: url, apiKey });
    await sb.run("name = 'World'");
    const hello = await sb.run("print(f'Hello {name}!')");
    expect(await hello.output()).toBe("Hello World!");
    expect(hello.status).toBe("success");
    expect(hello.hasError()).toBe(false);

    const failed = await sb.run("1/0");
    expect(failed.status).toBe("error");
    expect(failed.hasError()).toBe(true);
    expect(await failed.error()).toContain("ZeroDivisionError");

    const slow = await sb.run("import time; time.sleep(30)", { timeout: 1 });
    expect(slow.status).toBe("timeout");
    expect(await (await sb.run("print(name)")).output()).toBe("World");

    const echo = await sb.command.run("echo", ["Hello", "World"]);
    expect(await echo.output()).toBe("Hello World");
    expect(echo).toMatchObject({ exitCode: 0, success: true });
    const missing = await sb.command.run("ls", ["/nonexistent"]);
    expect(missing.success).toBe(false);
    expect(missing.exitCode).not.toBe(0);
    expect(await missing.error()).toContain("nonexistent");
    await expect(sb.command.run("sleep", ["10"], 1)).rejects.toBeInstanceOf(TimeoutError);

    expect(await sb.metrics.isRunning()).toBe(true);
    expect((await sb.metrics.all()).name).toBe(sb.name);
  });

  it("runs JavaScript with state and top-level await in a NodeSandbox", async (ctx) => {
    const { url, apiKey } = need(ctx);
    const sb = await NodeSandbox.create({ name: unique("ts-node"), serverUrl: url, apiKey });
    try {
      await sb.run("var name = 'World'");
      expect(await (await sb.run("console.log(`Hello ${name}!`)")).output()).toBe("Hello World!");
      const awaited = await sb.run(
        "await new Promise((r) => setTimeout(r, 50)); console.log('later')",
      );
      expect(await awaited.output()).toBe("later");
      const thrown = await sb.run("throw new Error('boom')");
      expect(thrown.hasError()).toBe(true);
      expect(await thrown.error()).toContain("boom");
    } finally {
      await sb.stop();
    }
    expect(await sb.metrics.isRunning()).toBe(false);
  });

  it("delivers output to callbacks (streamed, or at the end from an older server)", async (ctx) => {
    const { url, apiKey } = need(ctx);
    await using sb = await PythonSandbox.create({
      name: unique("ts-stream"),
      serverUrl: url,
      apiKey,
    });
    const chunks: string[] = [];
    const errs: string[] = [];
    const exe = await sb.run(
      "import sys\nfor i in range(3): print(i)\nprint('w', file=sys.stderr)",
      {
        onStdout: (t) => void chunks.push(t),
        onStderr: (t) => void errs.push(t),
      },
    );
    expect(chunks.join("")).toBe("0\n1\n2\n");
    expect(errs.join("")).toBe("w\n");
    expect(await exe.output()).toBe("0\n1\n2");
  });

  it("moves files in and out of the guest", async (ctx) => {
    const { url, apiKey } = need(ctx);
    await using sb = await PythonSandbox.create({
      name: unique("ts-files"),
      serverUrl: url,
      apiKey,
    });
    await sb.files.write("/tmp/sdk-e2e/data.bin", new Uint8Array([0, 1, 255]));
    expect([...(await sb.files.read("/tmp/sdk-e2e/data.bin"))]).toEqual([0, 1, 255]);
    const seen = await sb.run("print(open('/tmp/sdk-e2e/data.bin','rb').read().hex())");
    expect(await seen.output()).toBe("0001ff");
    await sb.files.write("/tmp/sdk-e2e/hello.txt", "héllo");
    expect(await sb.files.readText("/tmp/sdk-e2e/hello.txt")).toBe("héllo");
    try {
      const names = (await sb.files.list("/tmp/sdk-e2e")).map((e) => e.name);
      expect(names).toEqual(["data.bin", "hello.txt"]);
    } catch (err) {
      // sandbox.files.list needs a ListDir RPC in the vmm-agent (docs/streaming.md).
      expect(err).toBeInstanceOf(FilesUnsupportedError);
    }
  });

  it("names a missing sandbox with SandboxNotFoundError", async (ctx) => {
    const { url, apiKey } = need(ctx);
    const err: unknown = await new RpcClient({ serverUrl: url, apiKey })
      .call("sandbox.repl.run", {
        sandbox: unique("nope"),
        namespace: "default",
        language: "python",
        code: "1",
      })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SandboxNotFoundError);
    expect(err).toMatchObject({ rpcCode: -32004 });
  });
});

describe("Python SDK", () => {
  it("passes its real-server suite (libs/sdk-python/tests/test_server.py)", async (ctx) => {
    const { url, apiKey } = need(ctx);
    const { stderr } = await run("python3", ["-m", "unittest", "-v", "test_server"], {
      cwd: join(REPO_ROOT, "libs", "sdk-python", "tests"),
      env: {
        ...process.env,
        PYTHONPATH: join(REPO_ROOT, "libs", "sdk-python"),
        MSB_TEST_SERVER_URL: url,
        ...(apiKey === undefined ? {} : { MSB_TEST_API_KEY: apiKey }),
      },
      timeout: 900_000,
    });
    expect(stderr).toMatch(/\nOK\b/);
    expect(stderr).not.toContain("skipped");
  }, 900_000);
});

describe("the manual's examples, unchanged", () => {
  const examples = join(REPO_ROOT, "e2e", "src", "sdk", "examples");
  const cases: { file: string; expected: RegExp }[] = [
    { file: "first_sandbox.py", expected: /^Hello World!\n$/ },
    { file: "first_sandbox.mjs", expected: /^Hello World!\n$/ },
    { file: "python_sandbox.py", expected: /^Hello from Python!\n200\n$/ },
    {
      file: "node_sandbox.py",
      expected:
        /^输出: Hello from Node\.js!\n文件内容: Hello from Node\.js!\n平台: linux\nNode\.js版本: v\d+\.\d+\.\d+\n$/,
    },
  ];

  for (const { file, expected } of cases) {
    it(`${file} prints what the manual says`, async (ctx) => {
      const { url, apiKey } = need(ctx);
      const program = file.endsWith(".py") ? "python3" : process.execPath;
      const { stdout, stderr } = await run(program, [join(examples, file)], {
        cwd: examples,
        env: {
          ...process.env,
          PYTHONPATH: join(REPO_ROOT, "libs", "sdk-python"),
          MSB_SERVER_URL: url,
          ...(apiKey === undefined ? {} : { MSB_API_KEY: apiKey }),
        },
        timeout: 600_000,
      });
      // The JS example reports failures with console.error and still exits 0.
      expect(stderr).toBe("");
      expect(stdout).toMatch(expected);
    });
  }
});
