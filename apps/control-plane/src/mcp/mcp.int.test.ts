import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  CallToolResultSchema,
  GetPromptResultSchema,
  type CallToolResult,
} from "@modelcontextprotocol/sdk/types.js";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { codeResult, out } from "../test-support/fakes.js";
import { createHarness, type Harness } from "../test-support/harness.js";

describe("MCP at /mcp over a real HTTP connection", () => {
  let h: Harness;
  let url: URL;
  const clients: Client[] = [];

  const connect = async (key?: string): Promise<Client> => {
    const client = new Client({ name: "msb-test", version: "1.0.0" });
    const transport = new StreamableHTTPClientTransport(url, {
      requestInit: key === undefined ? {} : { headers: { authorization: `Bearer ${key}` } },
    });
    await client.connect(transport);
    clients.push(client);
    return client;
  };

  const text = (result: unknown): string => {
    const content = (result as CallToolResult).content[0];
    return content?.type === "text" ? content.text : "";
  };

  beforeEach(async () => {
    h = await createHarness();
    const address = await h.app.listen({ port: 0, host: "127.0.0.1" });
    url = new URL("/mcp", address);
  });
  afterEach(async () => {
    await Promise.allSettled(clients.splice(0).map((c) => c.close()));
    await h.close();
  });

  it("lists the SPEC tools with JSON schemas, and the prompts", async () => {
    const client = await connect(h.key("*"));
    const { tools } = await client.listTools();
    expect(tools.map((t) => t.name)).toEqual([
      "sandbox_start",
      "sandbox_stop",
      "sandbox_run_code",
      "sandbox_run_command",
      "sandbox_get_metrics",
    ]);
    const runCode = tools.find((t) => t.name === "sandbox_run_code")!;
    expect(runCode.inputSchema.required).toEqual(["sandbox", "language", "code"]);
    expect(runCode.inputSchema.properties).toHaveProperty("timeout");
    const stop = tools.find((t) => t.name === "sandbox_stop")!;
    expect(stop.inputSchema.required).toEqual(["sandbox"]);
    expect(stop.inputSchema.properties).toHaveProperty("remove");

    const { prompts } = await client.listPrompts();
    expect(prompts.map((p) => p.name)).toEqual(["create_python_sandbox", "create_node_sandbox"]);
    const prompt = await client.getPrompt({
      name: "create_node_sandbox",
      arguments: { sandbox_name: "web", namespace: "team-a" },
    });
    expect(JSON.stringify(prompt.messages)).toMatch(/microsandbox\/node.*team-a/);
  });

  it("starts a sandbox and runs code through tools", async () => {
    const client = await connect(h.key("*"));
    const started = await client.callTool({
      name: "sandbox_start",
      arguments: { sandbox: "py", config: { image: "microsandbox/python" } },
    });
    expect(started.isError).toBeFalsy();
    expect(text(started)).toMatch(/^Sandbox py started successfully/);

    h.vmm.runScript = () => [out("stdout", "Hello World!\n"), codeResult("success")];
    const ran = await client.callTool({
      name: "sandbox_run_code",
      arguments: { sandbox: "py", language: "python", code: "print('Hello World!')" },
    });
    expect(JSON.parse(text(ran))).toMatchObject({
      status: "success",
      output: [{ stream: "stdout", text: "Hello World!" }],
    });

    const removed = await client.callTool({
      name: "sandbox_stop",
      arguments: { sandbox: "py", remove: true },
    });
    expect(text(removed)).toBe("Sandbox py stopped successfully and removed (namespace default).");
    expect(h.store.get("default", "py")).toBeUndefined();
    expect(h.vmm.removedDisks).toEqual(["default/py"]);
  });

  it("returns failures as isError results carrying the code", async () => {
    const client = await connect(h.key("team-a"));
    const missing = await client.callTool({
      name: "sandbox_run_command",
      arguments: { sandbox: "ghost", namespace: "team-a", command: "ls" },
    });
    expect(missing.isError).toBe(true);
    expect(text(missing)).toMatch(/^SANDBOX_NOT_FOUND \(-32004\): No sandbox 'ghost'/);

    const badArgs = await client.callTool({
      name: "sandbox_start",
      arguments: { sandbox: 42, config: { image: "" } },
    });
    expect(badArgs.isError).toBe(true);
    expect(text(badArgs)).toMatch(/^INVALID_PARAMS \(-32602\): .*sandbox must be a string/);

    const foreign = await client.callTool({
      name: "sandbox_get_metrics",
      arguments: { namespace: "team-b" },
    });
    expect(text(foreign)).toMatch(/^AUTH_FORBIDDEN/);

    const unknown = await client.callTool({ name: "sandbox_explode", arguments: {} });
    expect(text(unknown)).toMatch(/^METHOD_NOT_FOUND/);

    // The session survived all of that.
    expect((await client.listTools()).tools).toHaveLength(5);
  });

  it("requires a key like the JSON-RPC route", async () => {
    await expect(connect()).rejects.toThrow(/401|API key/);
    const res = await fetch(url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
      },
      body: JSON.stringify({ jsonrpc: "2.0", method: "tools/list", id: 1 }),
    });
    expect(res.status).toBe(401);
    expect(await res.json()).toMatchObject({ error: { code: -32002 } });
  });

  it("keeps a session to the key that opened it", async () => {
    const client = await connect(h.key("*"));
    const transport = (client as unknown as { transport: StreamableHTTPClientTransport }).transport;
    const sessionId = transport.sessionId!;
    const res = await fetch(url, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        accept: "application/json, text/event-stream",
        authorization: `Bearer ${h.key("*")}`,
        "mcp-session-id": sessionId,
        "mcp-protocol-version": "2025-06-18",
      },
      body: JSON.stringify({ jsonrpc: "2.0", method: "tools/list", id: 1 }),
    });
    expect(res.status).toBe(404);
  });

  it("answers a notification with 202 and ends a session on DELETE", async () => {
    const key = h.key("*");
    const client = await connect(key);
    const sessionId = (client as unknown as { transport: StreamableHTTPClientTransport }).transport
      .sessionId!;
    const headers = {
      "content-type": "application/json",
      accept: "application/json, text/event-stream",
      authorization: `Bearer ${key}`,
      "mcp-session-id": sessionId,
      "mcp-protocol-version": "2025-06-18",
    };
    const note = await fetch(url, {
      method: "POST",
      headers,
      body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
    });
    expect(note.status).toBe(202);
    const del = await fetch(url, { method: "DELETE", headers });
    expect(del.status).toBe(200);
    const after = await fetch(url, {
      method: "POST",
      headers,
      body: JSON.stringify({ jsonrpc: "2.0", method: "tools/list", id: 2 }),
    });
    expect(after.status).toBe(404);
  });

  it("answers malformed tools/call and prompts/get params with -32602, not -32603 (fuzz finding)", async () => {
    const client = await connect(h.key("*"));
    await expect(
      client.request(
        { method: "tools/call", params: { name: "sandbox_stop", arguments: 0.5 } },
        CallToolResultSchema,
      ),
    ).rejects.toMatchObject({ code: -32602 });
    await expect(
      client.request({ method: "prompts/get", params: { name: 5 } }, GetPromptResultSchema),
    ).rejects.toMatchObject({ code: -32602 });
    await expect(
      client.request({ method: "prompts/get", params: { name: 5 } }, GetPromptResultSchema),
    ).rejects.toThrow(/sandbox_name/);
    // The session still works.
    expect((await client.listTools()).tools).toHaveLength(5);
  });

  it("answers arguments with a `constructor: null` key with -32602, not -32603 (soak finding: zod 4 threw)", async () => {
    const client = await connect(h.key("*"));
    await expect(
      client.request(
        {
          method: "tools/call",
          params: { name: "sandbox_stop", arguments: { constructor: null } },
        },
        CallToolResultSchema,
      ),
    ).rejects.toMatchObject({ code: -32602 });
    await expect(
      client.request(
        { method: "prompts/get", params: { name: "x", arguments: { constructor: null } } },
        GetPromptResultSchema,
      ),
    ).rejects.toMatchObject({ code: -32602 });
    expect((await client.listTools()).tools).toHaveLength(5);
  });
});

describe("MCP sessions under a session flood", () => {
  it("never closes another key's session: one key's flood evicts only its own oldest", async () => {
    const h = await createHarness({
      env: { MSB_MCP_MAX_SESSIONS: "6", MSB_MCP_MAX_SESSIONS_PER_KEY: "3" },
    });
    const clients: Client[] = [];
    try {
      const address = await h.app.listen({ port: 0, host: "127.0.0.1" });
      const url = new URL("/mcp", address);
      const connect = async (key: string): Promise<Client> => {
        const client = new Client({ name: "msb-test", version: "1.0.0" });
        await client.connect(
          new StreamableHTTPClientTransport(url, {
            requestInit: { headers: { authorization: `Bearer ${key}` } },
          }),
        );
        clients.push(client);
        return client;
      };
      const victim = await connect(h.key("team-a"));
      const attackerKey = h.key("team-b");
      const flood: Client[] = [];
      for (let i = 0; i < 10; i += 1) flood.push(await connect(attackerKey));
      // The other tenant's session still works.
      expect((await victim.listTools()).tools).toHaveLength(5);
      // The attacker keeps its 3 newest; its older ones were closed.
      expect((await flood.at(-1)!.listTools()).tools).toHaveLength(5);
      await expect(flood[0]!.listTools()).rejects.toThrow(/404|not found/i);
      // Keys fill the server's total: a further key is refused, nobody else is evicted.
      await connect(h.key("team-c"));
      await connect(h.key("team-c"));
      await expect(connect(h.key("team-d"))).rejects.toThrow(/503|CAPACITY_EXHAUSTED|MCP sessions/);
      expect((await victim.listTools()).tools).toHaveLength(5);
    } finally {
      await Promise.allSettled(clients.map((c) => c.close()));
      await h.close();
    }
  });
});
