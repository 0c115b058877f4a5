import { Server } from "@modelcontextprotocol/sdk/server/index.js";
import {
  CallToolRequestSchema,
  ErrorCode as McpErrorCode,
  GetPromptRequestSchema,
  ListPromptsRequestSchema,
  ListToolsRequestSchema,
  McpError,
  type CallToolResult,
  type GetPromptResult,
  type Tool,
} from "@modelcontextprotocol/sdk/types.js";
import { MsbError, toJsonRpcError, toMsbError } from "@msb/errors";
import { NAME_PATTERN } from "@msb/keys";
import type { Logger } from "@msb/runtime";
import { randomUUID } from "node:crypto";
import { z } from "zod";
import { zodToJsonSchema } from "zod-to-json-schema";
import type { Caller } from "../auth/caller.js";
import {
  metricsParamsSchema,
  parseParams,
  runCodeParamsSchema,
  runCommandParamsSchema,
  startParamsSchema,
  stopParamsSchema,
} from "../sandboxes/schemas.js";
import type { SandboxService } from "../sandboxes/service.js";

/** Where the MCP route puts the authenticated caller for the handlers (`authInfo.extra`). */
export const CALLER_KEY = "msbCaller";

interface ToolDef {
  readonly name: string;
  readonly description: string;
  readonly schema: z.ZodType;
  readonly run: (args: unknown, caller: Caller, signal: AbortSignal) => Promise<unknown>;
}

/**
 * The tools and prompts of SPEC.md over one SandboxService. Arguments are validated by the
 * same zod schemas as the JSON-RPC params; every failure (bad arguments included) is a tool
 * result with `isError: true` whose text starts with the msb code, never a crash.
 */
export function createMcpServer(
  service: SandboxService,
  options: { readonly version: string; readonly logger: Logger },
): Server {
  const tools: readonly ToolDef[] = [
    {
      name: "sandbox_start",
      description:
        "Start a sandbox (a microVM with its own kernel) and wait until it is ready. Starting a running sandbox with the same config succeeds again. Default images: microsandbox/python, microsandbox/node.",
      schema: startParamsSchema,
      run: async (args, caller) => {
        const r = await service.start(caller, parseParams(startParamsSchema, args));
        const how =
          r.startKind === null
            ? ""
            : `, ${r.startKind} start${r.bootMs === null ? "" : ` in ${r.bootMs} ms`}`;
        return `Sandbox ${r.name} started successfully (namespace ${r.namespace}, image ${r.image}${r.alreadyRunning ? ", it was already running" : how}).`;
      },
    },
    {
      name: "sandbox_stop",
      description:
        "Stop a running sandbox. Its files are kept for the next start, unless remove is true: then its files and the sandbox itself are deleted.",
      schema: stopParamsSchema,
      run: async (args, caller) => {
        const r = await service.stop(caller, parseParams(stopParamsSchema, args));
        return `Sandbox ${r.name} stopped successfully${r.removed ? " and removed" : ""} (namespace ${r.namespace}).`;
      },
    },
    {
      name: "sandbox_run_code",
      description:
        "Run code in the sandbox's persistent REPL (python, or node/nodejs/javascript): variables survive between calls. Returns status (success/error/timeout) and output lines.",
      schema: runCodeParamsSchema,
      run: (args, caller, signal) =>
        service.runCode(caller, parseParams(runCodeParamsSchema, args), signal),
    },
    {
      name: "sandbox_run_command",
      description:
        "Run a command with arguments in the sandbox. Returns exit_code, success and output lines.",
      schema: runCommandParamsSchema,
      run: (args, caller, signal) =>
        service.runCommand(caller, parseParams(runCommandParamsSchema, args), signal),
    },
    {
      name: "sandbox_get_metrics",
      description:
        'CPU, memory (MiB) and disk (bytes) use of sandboxes; namespace "*" lists every sandbox the key may see.',
      schema: metricsParamsSchema,
      run: (args, caller, signal) =>
        service.metrics(caller, parseParams(metricsParamsSchema, args), signal),
    },
  ];
  const toolList: Tool[] = tools.map((t) => ({
    name: t.name,
    description: t.description,
    inputSchema: inputSchemaOf(t.schema),
  }));

  const server = new Server(
    { name: "msb", version: options.version },
    { capabilities: { tools: {}, prompts: {} } },
  );

  server.setRequestHandler(ListToolsRequestSchema, () => ({ tools: toolList }));

  server.setRequestHandler(
    looseRequest("tools/call"),
    async (loose, extra): Promise<CallToolResult> => {
      // The SDK's tools/call wrapper has checked the params by now (-32602 otherwise).
      const request = CallToolRequestSchema.parse(loose);
      const tool = tools.find((t) => t.name === request.params.name);
      try {
        if (tool === undefined) {
          throw new MsbError(
            "METHOD_NOT_FOUND",
            `Unknown tool '${request.params.name}'. Tools: ${tools.map((t) => t.name).join(", ")}.`,
          );
        }
        const caller = extra.authInfo?.extra?.[CALLER_KEY] as Caller | undefined;
        if (caller === undefined) {
          throw new MsbError(
            "AUTH_REQUIRED",
            "No authenticated caller; send the API key with every MCP request.",
          );
        }
        const result = await tool.run(request.params.arguments ?? {}, caller, extra.signal);
        return {
          content: [
            {
              type: "text",
              text: typeof result === "string" ? result : JSON.stringify(result, null, 2),
            },
          ],
        };
      } catch (thrown) {
        const requestId = randomUUID();
        const err = toMsbError(thrown, requestId);
        if (!(thrown instanceof MsbError)) {
          options.logger.error(
            { err: thrown, requestId, tool: request.params.name },
            "internal error in an MCP tool",
          );
        }
        const rpc = toJsonRpcError(err);
        return {
          isError: true,
          content: [{ type: "text", text: `${err.code} (${rpc.code}): ${err.message}` }],
          structuredContent: { error: rpc },
        };
      }
    },
  );

  server.setRequestHandler(ListPromptsRequestSchema, () => ({
    prompts: PROMPTS.map((p) => ({
      name: p.name,
      description: p.description,
      arguments: [
        { name: "sandbox_name", description: "Name of the sandbox to create", required: true },
        { name: "namespace", description: 'Namespace (default "default")', required: false },
      ],
    })),
  }));

  server.setRequestHandler(looseRequest("prompts/get"), (loose): GetPromptResult => {
    const parsed = GetPromptRequestSchema.safeParse(loose);
    if (!parsed.success) {
      throw new McpError(
        McpErrorCode.InvalidParams,
        'prompts/get needs params {"name": "<prompt>", "arguments": {"sandbox_name": "...", "namespace": "..."}} with string values.',
      );
    }
    const request = parsed.data;
    const prompt = PROMPTS.find((p) => p.name === request.params.name);
    if (prompt === undefined) {
      throw new McpError(
        McpErrorCode.InvalidParams,
        `Unknown prompt '${request.params.name}'. Prompts: ${PROMPTS.map((p) => p.name).join(", ")}.`,
      );
    }
    const args = request.params.arguments ?? {};
    const name = args["sandbox_name"];
    const namespace = args["namespace"] ?? "default";
    if (name === undefined || !NAME_PATTERN.test(name) || !NAME_PATTERN.test(namespace)) {
      throw new McpError(
        McpErrorCode.InvalidParams,
        "sandbox_name is required and, like namespace, must start with a letter or digit and contain only letters, digits, '_' or '-'.",
      );
    }
    return {
      description: prompt.description,
      messages: [{ role: "user", content: { type: "text", text: prompt.text(name, namespace) } }],
    };
  });

  return server;
}

const PROMPTS = [
  {
    name: "create_python_sandbox",
    description: "Create a Python sandbox and run code in it",
    text: (name: string, ns: string) =>
      `Create a Python sandbox named "${name}" in namespace "${ns}": call sandbox_start with {"sandbox": "${name}", "namespace": "${ns}", "config": {"image": "microsandbox/python", "memory": 512, "cpus": 1}}. Then run Python with sandbox_run_code ({"sandbox": "${name}", "namespace": "${ns}", "language": "python", "code": "..."}); variables persist between calls. Use sandbox_run_command for shell commands (e.g. pip install). Call sandbox_stop when done.`,
  },
  {
    name: "create_node_sandbox",
    description: "Create a Node.js sandbox and run code in it",
    text: (name: string, ns: string) =>
      `Create a Node.js sandbox named "${name}" in namespace "${ns}": call sandbox_start with {"sandbox": "${name}", "namespace": "${ns}", "config": {"image": "microsandbox/node", "memory": 512, "cpus": 1}}. Then run JavaScript with sandbox_run_code ({"sandbox": "${name}", "namespace": "${ns}", "language": "nodejs", "code": "..."}); variables and top-level await work across calls. Use sandbox_run_command for shell commands (e.g. npm install). Call sandbox_stop when done.`,
  },
] as const;

/**
 * A request schema that only pins the method. The SDK parses a request with the handler's
 * schema before calling it and answers a mismatch as -32603 with zod's raw issue dump; bad
 * params from a client are -32602 with a readable message, so the handlers check them.
 */
function looseRequest<M extends string>(method: M) {
  return z.object({ method: z.literal(method), params: z.unknown() }).passthrough();
}

function inputSchemaOf(schema: z.ZodType): Tool["inputSchema"] {
  const json: Record<string, unknown> = zodToJsonSchema(schema, {
    $refStrategy: "none",
    target: "jsonSchema7",
  });
  delete json["$schema"];
  return { ...json, type: "object" };
}
