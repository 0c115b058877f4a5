import { randomUUID } from "node:crypto";
import type { IncomingMessage } from "node:http";
import type { Server } from "@modelcontextprotocol/sdk/server/index.js";
import { StreamableHTTPServerTransport } from "@modelcontextprotocol/sdk/server/streamableHttp.js";
import type { AuthInfo } from "@modelcontextprotocol/sdk/server/auth/types.js";
import { isInitializeRequest } from "@modelcontextprotocol/sdk/types.js";
import type { FastifyInstance } from "fastify";
import { MsbError, httpStatusOf, toMsbError } from "@msb/errors";
import type { Authenticator } from "../auth/authenticate.js";
import { MCP_PATH } from "../http/routes.js";
import { errorResponse } from "../http/rpc/envelope.js";
import { CALLER_KEY } from "./server.js";

export interface McpRouteDeps {
  readonly auth: Authenticator;
  /** A fresh MCP server for each session (an SDK server serves one transport). */
  readonly createServer: () => Server;
}

export interface McpRouteOptions {
  /** Open sessions on the server; beyond it a new session is refused (or an idle one closed). */
  readonly maxSessions: number;
  /** Open sessions per key; beyond it that key's least recently used session is closed. */
  readonly maxSessionsPerKey: number;
  /** A session unused this long may be closed to make room for another key's. Default 30 min. */
  readonly sessionIdleMs?: number;
  readonly now?: () => number;
}

interface Session {
  readonly transport: StreamableHTTPServerTransport;
  readonly server: Server;
  /** The key that opened the session; only it may use the session. */
  readonly callerId: string;
  /** When it was last used (ms); sessions are kept in this order. */
  lastUsedMs: number;
}

/**
 * MCP streamable HTTP at `/mcp` (POST, GET for the SSE stream, DELETE to end a session),
 * stateful with `Mcp-Session-Id`. Every request is authenticated like the JSON-RPC route;
 * a session belongs to the key that opened it (another key gets 404, as for an unknown
 * session), and tools run with the caller of the request that invoked them.
 */
export function registerMcpRoute(
  app: FastifyInstance,
  deps: McpRouteDeps,
  options: McpRouteOptions,
): void {
  // Map order is insertion order; re-inserting on use keeps the least recently used first.
  const sessions = new Map<string, Session>();
  const now = options.now ?? Date.now;
  const idleMs = options.sessionIdleMs ?? 30 * 60_000;

  const sessionsOf = (callerId: string): string[] =>
    [...sessions].filter(([, s]) => s.callerId === callerId).map(([id]) => id);

  /**
   * Makes room for one more session of `callerId`, closing only that key's own oldest
   * sessions (a key can never close another key's), or a session of any key that has been
   * idle for `idleMs` (abandoned). False when the server is full of other keys' live sessions.
   */
  const makeRoom = (callerId: string, log: { info(obj: object, msg: string): void }): boolean => {
    const own = sessionsOf(callerId);
    while (own.length >= options.maxSessionsPerKey) {
      const oldest = own.shift() as string;
      log.info({ session: oldest }, "closing this key's least recently used MCP session");
      void closeSession(oldest);
    }
    if (sessions.size < options.maxSessions) return true;
    const [lruId, lru] = sessions.entries().next().value as [string, Session];
    const victim = own[0] ?? (now() - lru.lastUsedMs >= idleMs ? lruId : undefined);
    if (victim === undefined) return false;
    log.info({ session: victim }, "closing an MCP session to make room");
    void closeSession(victim);
    return true;
  };

  const closeSession = async (id: string): Promise<void> => {
    const session = sessions.get(id);
    sessions.delete(id);
    await session?.transport.close();
    await session?.server.close();
  };

  app.addHook("onClose", async () => {
    await Promise.allSettled([...sessions.keys()].map(closeSession));
  });

  app.route({
    method: ["GET", "POST", "DELETE"],
    url: MCP_PATH,
    handler: async (request, reply) => {
      const fail = (err: MsbError, status = httpStatusOf(err)) =>
        reply.status(status).send(errorResponse(null, err));
      let caller;
      try {
        caller = deps.auth.authenticate(request.headers);
      } catch (err) {
        return fail(toMsbError(err, request.id));
      }

      const header = request.headers["mcp-session-id"];
      const sessionId = typeof header === "string" ? header : undefined;
      let session: Session | undefined;
      if (sessionId !== undefined) {
        session = sessions.get(sessionId);
        if (session === undefined || session.callerId !== caller.id) {
          return fail(
            new MsbError(
              "INVALID_REQUEST",
              "MCP session not found (it ended, was closed, or the server restarted). Start a new session with an initialize request.",
              { details: { reason: "mcp_session" } },
            ),
            404,
          );
        }
        sessions.delete(sessionId);
        session.lastUsedMs = now();
        sessions.set(sessionId, session);
      } else if (request.method === "POST" && isInitializeRequest(request.body)) {
        if (!makeRoom(caller.id, request.log)) {
          return fail(
            new MsbError(
              "CAPACITY_EXHAUSTED",
              `This server has ${options.maxSessions} MCP sessions open (MSB_MCP_MAX_SESSIONS), all in use by other keys. Close sessions you no longer need (DELETE /mcp) and retry later, or ask the operator to raise the limit.`,
              { details: { reason: "mcp_sessions", maxSessions: options.maxSessions } },
            ),
          );
        }
        const server = deps.createServer();
        const transport = new StreamableHTTPServerTransport({
          sessionIdGenerator: () => randomUUID(),
          onsessioninitialized: (id) => {
            // Room was made above; concurrent initializes of one key may overshoot its cap
            // by the number in flight, never another key's sessions.
            sessions.set(id, { transport, server, callerId: caller.id, lastUsedMs: now() });
          },
          onsessionclosed: (id) => {
            sessions.delete(id);
          },
        });
        transport.onclose = () => {
          if (transport.sessionId !== undefined) sessions.delete(transport.sessionId);
        };
        await server.connect(transport);
        session = { transport, server, callerId: caller.id, lastUsedMs: now() };
      } else {
        return fail(
          new MsbError(
            "INVALID_REQUEST",
            "This MCP request has no Mcp-Session-Id header. Open a session first: POST an initialize request, then send the Mcp-Session-Id it returns with every request.",
            { details: { reason: "mcp_session" } },
          ),
        );
      }

      // The MCP SDK validates with zod 4, which throws (instead of failing) on an object with a
      // `constructor` key whose value is null: that would leave as -32603 for bad input. No
      // MCP message or msb tool argument has such a key, so it is refused before the SDK.
      if (request.method === "POST" && hasConstructorKey(request.body)) {
        const id = messageId(request.body);
        // 200 with a JSON-RPC error, as the SDK answers other bad params: MCP clients read a
        // non-2xx answer as a transport failure and never see the code.
        return reply
          .status(200)
          .send(
            errorResponse(
              id,
              new MsbError(
                "INVALID_PARAMS",
                "An object in this MCP message has a key named 'constructor', which no MCP method or msb tool accepts. Remove it.",
              ),
            ),
          );
      }

      const auth: AuthInfo = {
        token: "",
        clientId: caller.id,
        scopes: [caller.scope],
        extra: { [CALLER_KEY]: caller },
      };
      (request.raw as IncomingMessage & { auth?: AuthInfo }).auth = auth;
      reply.hijack();
      await session.transport.handleRequest(request.raw, reply.raw, request.body);
    },
  });
}

/** Whether `value` (parsed JSON) holds an object with an own `constructor` key, at any depth. */
function hasConstructorKey(value: unknown, depth = 0): boolean {
  if (typeof value !== "object" || value === null || depth > 64) return false;
  if (!Array.isArray(value) && Object.hasOwn(value, "constructor")) return true;
  return Object.values(value).some((v) => hasConstructorKey(v, depth + 1));
}

/** The id of a single JSON-RPC message, so that its error reaches the waiting request. */
function messageId(body: unknown): string | number | null {
  if (typeof body !== "object" || body === null || Array.isArray(body)) return null;
  const id = (body as { id?: unknown }).id;
  return typeof id === "string" || typeof id === "number" ? id : null;
}
