/// <reference lib="esnext.disposable" />
import { createServer } from "node:net";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import {
  AuthenticationError,
  CapacityError,
  FilesUnsupportedError,
  InvalidParamsError,
  MicrosandboxError,
  NodeSandbox,
  ProtocolError,
  PythonSandbox,
  RpcClient,
  SandboxExistsError,
  SandboxNotFoundError,
  ServerNotRunningError,
  TimeoutError,
} from "./index.js";
import {
  startFakeRpcServer,
  type FakeRpcServer,
  type Handler,
  type Recorded,
} from "./test-support/fake-rpc-server.js";

let server: FakeRpcServer | undefined;

async function serve(handler: Handler = () => undefined): Promise<FakeRpcServer> {
  server = await startFakeRpcServer(handler);
  return server;
}

beforeEach(() => {
  vi.stubEnv("MSB_SERVER_URL", "");
  vi.stubEnv("MSB_API_KEY", "");
});

afterEach(async () => {
  vi.unstubAllEnvs();
  await server?.close();
  server = undefined;
});

const replResult = (status: string, ...output: [string, string][]) => ({
  result: {
    status,
    language: "python",
    output: output.map(([stream, text]) => ({ stream, text })),
  },
});

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen(0, "127.0.0.1", resolve));
  const address = s.address();
  const port = typeof address === "object" && address !== null ? address.port : 0;
  await new Promise((resolve) => s.close(resolve));
  return port;
}

describe("request shape", () => {
  it("sends the documented start, repl.run and stop requests", async () => {
    const srv = await serve((rec) =>
      rec.method === "sandbox.repl.run"
        ? replResult("success", ["stdout", "Hello World!\n"])
        : undefined,
    );
    const sb = await NodeSandbox.create({ name: "my-first-sandbox", serverUrl: srv.url });
    try {
      const exec = await sb.run("console.log(`Hello ${name}!`)");
      expect(await exec.output()).toBe("Hello World!");
    } finally {
      await sb.stop();
    }
    expect(srv.methods()).toEqual(["sandbox.start", "sandbox.repl.run", "sandbox.stop"]);
    const [start, run, stop] = srv.requests as [Recorded, Recorded, Recorded];
    for (const rec of srv.requests) {
      expect(rec.path).toBe("/api/v1/rpc");
      expect(rec.body.jsonrpc).toBe("2.0");
      expect(typeof rec.body.id).toBe("string");
      expect(rec.headers["content-type"]).toBe("application/json");
      expect(rec.headers["authorization"]).toBeUndefined();
    }
    expect(start.params).toEqual({
      sandbox: "my-first-sandbox",
      namespace: "default",
      config: { image: "microsandbox/node", memory: 512, cpus: 1 },
    });
    expect(run.params).toEqual({
      sandbox: "my-first-sandbox",
      namespace: "default",
      language: "nodejs",
      code: "console.log(`Hello ${name}!`)",
    });
    expect(stop.params).toEqual({ sandbox: "my-first-sandbox", namespace: "default" });
  });

  it("passes options, the API key and timeouts through", async () => {
    const srv = await serve((rec) =>
      rec.method === "sandbox.repl.run" ? replResult("success") : undefined,
    );
    const sb = await PythonSandbox.create({
      name: "p1",
      serverUrl: `${srv.url}/`,
      namespace: "team-a",
      apiKey: "k-123",
      image: "microsandbox/python:3.12",
      memory: 1024,
      cpus: 2,
      timeout: 300,
      envs: ["DEBUG=true"],
    });
    await sb.run("pass", { timeout: 5 });
    await sb.stop();
    const [start, run] = srv.requests as [Recorded, Recorded];
    expect(start.params["namespace"]).toBe("team-a");
    expect(start.params["config"]).toEqual({
      image: "microsandbox/python:3.12",
      memory: 1024,
      cpus: 2,
      timeout: 300,
      envs: ["DEBUG=true"],
    });
    expect(run.params["language"]).toBe("python");
    expect(run.params["timeout"]).toBe(5);
    for (const rec of srv.requests) expect(rec.headers["authorization"]).toBe("Bearer k-123");
  });

  it("asks the server to delete the sandbox with stop({ remove: true })", async () => {
    const srv = await serve();
    const sb = await PythonSandbox.create({ name: "tmp", serverUrl: srv.url });
    await sb.stop({ remove: true });
    expect(srv.requests.at(-1)).toMatchObject({
      method: "sandbox.stop",
      params: { sandbox: "tmp", namespace: "default", remove: true },
    });
  });

  it("takes the server URL and key from MSB_SERVER_URL and MSB_API_KEY", async () => {
    const srv = await serve();
    vi.stubEnv("MSB_SERVER_URL", srv.url);
    vi.stubEnv("MSB_API_KEY", "env-key");
    const sb = await PythonSandbox.create();
    await sb.stop();
    expect(sb.name).toMatch(/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/);
    expect(srv.requests[0]?.headers["authorization"]).toBe("Bearer env-key");
  });

  it("reuses a keep-alive connection across calls", async () => {
    const srv = await serve((rec) =>
      rec.method === "sandbox.repl.run" ? replResult("success") : undefined,
    );
    const sb = await PythonSandbox.create({ name: "ka", serverUrl: srv.url });
    for (let i = 0; i < 5; i++) await sb.run("pass");
    await sb.stop();
    expect(srv.requests).toHaveLength(7);
    // fetch (undici) keeps a small pool; what matters is that calls do not each connect.
    expect(srv.connections()).toBeLessThanOrEqual(2);
  });

  it("command.run takes (cmd, args, timeout) as the original did", async () => {
    const srv = await serve((rec) =>
      rec.method === "sandbox.command.run"
        ? {
            result: {
              command: "echo",
              args: ["Hello", "World"],
              exit_code: 0,
              success: true,
              output: [{ stream: "stdout", text: "Hello World\n" }],
            },
          }
        : undefined,
    );
    const sb = await PythonSandbox.create({ name: "cmd", serverUrl: srv.url });
    const res = await sb.command.run("echo", ["Hello", "World"], 10);
    const bare = await sb.command.run("true");
    await sb.stop();
    expect(await res.output()).toBe("Hello World");
    expect(res.exitCode).toBe(0);
    expect(res.success).toBe(true);
    expect(srv.requests[1]?.params).toEqual({
      sandbox: "cmd",
      namespace: "default",
      command: "echo",
      args: ["Hello", "World"],
      timeout: 10,
    });
    expect(srv.requests[2]?.params["args"]).toEqual([]);
    expect(bare.success).toBe(true);
  });

  it("reads metrics for its own sandbox", async () => {
    const entry = {
      namespace: "default",
      name: "m",
      running: true,
      cpu_usage: 12.5,
      memory_usage: 80,
      disk_usage: 4096,
    };
    const srv = await serve((rec) =>
      rec.method === "sandbox.metrics.get"
        ? { result: { sandboxes: [{ ...entry, name: "other" }, entry] } }
        : undefined,
    );
    const sb = await PythonSandbox.create({ name: "m", serverUrl: srv.url });
    expect(await sb.metrics.all()).toEqual(entry);
    expect(await sb.metrics.cpu()).toBe(12.5);
    expect(await sb.metrics.memory()).toBe(80);
    expect(await sb.metrics.disk()).toBe(4096);
    expect(await sb.metrics.isRunning()).toBe(true);
    await sb.stop();
    expect(srv.requests[1]?.params).toEqual({ namespace: "default", sandbox: "m" });
  });

  it("stops at the end of an `await using` block", async () => {
    const srv = await serve();
    {
      await using sb = await PythonSandbox.create({ name: "scoped", serverUrl: srv.url });
      expect(sb.isStarted).toBe(true);
    }
    expect(srv.methods()).toEqual(["sandbox.start", "sandbox.stop"]);
  });

  it("says how to start before run on an unstarted sandbox", async () => {
    const sb = new PythonSandbox({ name: "idle", serverUrl: "http://127.0.0.1:9" });
    await expect(sb.run("pass")).rejects.toMatchObject({ code: "SANDBOX_NOT_STARTED" });
  });
});

describe("errors", () => {
  async function callWith(answer: ReturnType<Handler>) {
    const srv = await serve(() => answer);
    return new RpcClient({ serverUrl: srv.url }).call(
      "sandbox.stop",
      { sandbox: "x" },
      { timeoutMs: 10_000 },
    );
  }

  it("maps error.data.code to the typed error with the server's message", async () => {
    const cases = [
      ["SANDBOX_NOT_FOUND", -32004, 404, SandboxNotFoundError],
      ["AUTH_INVALID", -32002, 401, AuthenticationError],
      ["SANDBOX_EXISTS", -32005, 409, SandboxExistsError],
      ["POLICY_DENIED", -32602, 403, InvalidParamsError],
      ["TIMEOUT", -32030, 504, TimeoutError],
      ["QUOTA_EXCEEDED", -32034, 429, CapacityError],
    ] as const;
    for (const [code, rpcCode, status, Class] of cases) {
      const message = `${code}: what to do next`;
      const err: unknown = await callWith({
        status,
        error: { code: rpcCode, message, data: { code } },
      }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(Class);
      expect(err).toMatchObject({ code, rpcCode, message });
      await server?.close();
      server = undefined;
    }
  });

  it("reports a body that is not JSON-RPC as a protocol error", async () => {
    const err: unknown = await callWith({ status: 404, raw: "Cannot POST /api/v1/rpc" }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ProtocolError);
    expect(String(err)).toContain("HTTP 404");
  });

  it("turns connection refused into ServerNotRunningError that says how to start the server", async () => {
    const url = `http://127.0.0.1:${await freePort()}`;
    const err: unknown = await PythonSandbox.create({ name: "x", serverUrl: url }).catch(
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(ServerNotRunningError);
    expect(err).toMatchObject({ code: "SERVER_NOT_RUNNING", rpcCode: undefined });
    expect((err as Error).message).toContain("msb server start --dev");
    expect((err as Error).message).toContain(url);
  });

  it("gives up at the client deadline with TimeoutError", async () => {
    const srv = await serve(() => ({ result: "late", delayMs: 2_000 }));
    const err: unknown = await new RpcClient({ serverUrl: srv.url })
      .call("sandbox.repl.run", {}, { timeoutMs: 200 })
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TimeoutError);
    expect(err).toMatchObject({ code: "TIMEOUT", rpcCode: undefined });
  });

  it("does not stop someone else's sandbox when start is refused", async () => {
    const srv = await serve(() => ({
      status: 409,
      error: {
        code: -32005,
        message: "exists with another config",
        data: { code: "SANDBOX_EXISTS" },
      },
    }));
    await expect(
      PythonSandbox.create({ name: "taken", serverUrl: srv.url }),
    ).rejects.toBeInstanceOf(SandboxExistsError);
    expect(srv.methods()).toEqual(["sandbox.start"]);
  });

  it("stops what the server may have started when the caller aborts the start", async () => {
    const srv = await serve((rec) =>
      rec.method === "sandbox.start" ? { result: "started", delayMs: 1_000 } : undefined,
    );
    const controller = new AbortController();
    const pending = PythonSandbox.create({
      name: "slow",
      serverUrl: srv.url,
      signal: controller.signal,
    });
    while (srv.requests.length === 0) await new Promise((r) => setTimeout(r, 10));
    controller.abort();
    await expect(pending).rejects.toBeDefined();
    expect(srv.methods()).toEqual(["sandbox.start", "sandbox.stop"]);
  });

  it("treats stopping a sandbox that is already gone as stopped", async () => {
    const srv = await serve((rec) =>
      rec.method === "sandbox.stop"
        ? {
            status: 404,
            error: { code: -32004, message: "gone", data: { code: "SANDBOX_NOT_FOUND" } },
          }
        : undefined,
    );
    const sb = await PythonSandbox.create({ name: "gone", serverUrl: srv.url });
    await sb.stop();
    expect(sb.isStarted).toBe(false);
  });
});

describe("streaming", () => {
  it("delivers server-sent output events in order, then returns the result", async () => {
    const final = {
      status: "success",
      language: "python",
      output: [
        { stream: "stdout", text: "1\n2\n" },
        { stream: "stderr", text: "w\n" },
      ],
    };
    const srv = await serve((rec) => {
      if (rec.method !== "sandbox.repl.run") return undefined;
      expect(rec.headers["accept"]).toContain("text/event-stream");
      return {
        sse: [
          ["output", { stream: "stdout", text: "1\n" }],
          [null, ": keep-alive"],
          ["output", { stream: "stderr", text: "w\n" }],
          ["output", { stream: "stdout", text: "2\n" }],
          ["result", { jsonrpc: "2.0", id: rec.body.id, result: final }],
        ],
      };
    });
    const seen: string[] = [];
    const sb = await PythonSandbox.create({ name: "s", serverUrl: srv.url });
    const exe = await sb.run("...", {
      onStdout: (t) => void seen.push(`out:${t}`),
      onStderr: async (t) => {
        await Promise.resolve();
        seen.push(`err:${t}`);
      },
    });
    await sb.stop();
    expect(seen).toEqual(["out:1\n", "err:w\n", "out:2\n"]);
    expect(await exe.output()).toBe("1\n2");
  });

  it("raises an error result that arrives in the stream", async () => {
    const srv = await serve((rec) =>
      rec.method === "sandbox.repl.run"
        ? {
            sse: [
              [
                "result",
                {
                  jsonrpc: "2.0",
                  id: rec.body.id,
                  error: { code: -32004, message: "vm died", data: { code: "VM_DIED" } },
                },
              ],
            ],
          }
        : undefined,
    );
    const sb = await PythonSandbox.create({ name: "s", serverUrl: srv.url });
    await expect(sb.run("...", { onStdout: () => undefined })).rejects.toMatchObject({
      code: "VM_DIED",
    });
    await sb.stop();
  });

  it("gives line items their newline back when falling back", async () => {
    const srv = await serve((rec) =>
      rec.method === "sandbox.repl.run"
        ? replResult("success", ["stdout", "0"], ["stdout", "1"], ["stderr", "w"])
        : undefined,
    );
    const seen: string[] = [];
    const sb = await PythonSandbox.create({ name: "s", serverUrl: srv.url });
    const exe = await sb.run("...", {
      onStdout: (t) => void seen.push(`out:${t}`),
      onStderr: (t) => void seen.push(`err:${t}`),
    });
    await sb.stop();
    expect(seen).toEqual(["out:0\n", "out:1\n", "err:w\n"]);
    expect(await exe.output()).toBe("0\n1");
  });

  it("falls back to delivering the collected output when the server answers plain JSON", async () => {
    const srv = await serve((rec) =>
      rec.method === "sandbox.command.run"
        ? {
            result: {
              exit_code: 0,
              success: true,
              output: [
                { stream: "stdout", text: "a\n" },
                { stream: "stderr", text: "b\n" },
                { stream: "stdout", text: "c\n" },
              ],
            },
          }
        : undefined,
    );
    const seen: string[] = [];
    const sb = await PythonSandbox.create({ name: "s", serverUrl: srv.url });
    const res = await sb.command.run("sh", ["-c", "..."], {
      onStdout: (t) => void seen.push(`out:${t}`),
      onStderr: (t) => void seen.push(`err:${t}`),
    });
    await sb.stop();
    expect(seen).toEqual(["out:a\n", "err:b\n", "out:c\n"]);
    expect(await res.output()).toBe("a\nc");
  });
});

describe("files", () => {
  it("writes, reads and lists with base64 on the wire", async () => {
    const store = new Map<string, Buffer>();
    const srv = await serve((rec) => {
      const p = rec.params;
      const path = String(p["path"]);
      switch (rec.method) {
        case "sandbox.files.write":
          store.set(path, Buffer.from(String(p["data"]), "base64"));
          return { result: { path, size: store.get(path)?.length } };
        case "sandbox.files.read":
          return {
            result: { path, data: store.get(path)?.toString("base64"), encoding: "base64" },
          };
        case "sandbox.files.list":
          return {
            result: {
              path,
              entries: [
                { name: "b.bin", type: "file", size: 3, mode: 0o644, mtime: 1.5 },
                { name: "a", type: "dir", size: 0, mode: 0o755, mtime: 1 },
              ],
            },
          };
        default:
          return undefined;
      }
    });
    const sb = await PythonSandbox.create({ name: "f", serverUrl: srv.url });
    await sb.files.write("/tmp/b.bin", new Uint8Array([0, 255, 122]), { mode: 0o600 });
    await sb.files.write("/tmp/t.txt", "héllo");
    expect([...(await sb.files.read("/tmp/b.bin"))]).toEqual([0, 255, 122]);
    expect(await sb.files.readText("/tmp/t.txt")).toBe("héllo");
    const entries = await sb.files.list("/tmp");
    await sb.stop();
    expect(srv.requests[1]?.params).toEqual({
      sandbox: "f",
      namespace: "default",
      path: "/tmp/b.bin",
      data: "AP96",
      encoding: "base64",
      create_parents: true,
      mode: 0o600,
    });
    expect(entries.map((e) => [e.name, e.type])).toEqual([
      ["a", "dir"],
      ["b.bin", "file"],
    ]);
  });

  it("says clearly when the server lacks sandbox.files.*", async () => {
    const srv = await serve();
    const sb = await PythonSandbox.create({ name: "f", serverUrl: srv.url });
    const err: unknown = await sb.files.read("/etc/hostname").catch((e: unknown) => e);
    await sb.stop();
    expect(err).toBeInstanceOf(FilesUnsupportedError);
    expect(err).toBeInstanceOf(MicrosandboxError);
    expect(err).toMatchObject({ code: "FILES_UNSUPPORTED" });
    expect((err as Error).message).toContain("sandbox.files.read");
  });
});
