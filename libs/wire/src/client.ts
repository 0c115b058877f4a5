import { MsbError } from "@msb/errors";
import type { RpcResponse } from "./schemas/events.js";
import { jsonRpcResult } from "./stream.js";

export const DEFAULT_SERVER_URL = "http://127.0.0.1:5555";

/** Failures of `fetch` that mean "nobody is listening there". */
const UNREACHABLE = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "EAI_AGAIN",
]);

function notRunning(url: string, cause: unknown): MsbError {
  return new MsbError(
    "SERVER_NOT_RUNNING",
    `msb server is not running at ${url}; start it with \`msb server start --dev\`.`,
    { cause, details: { url } },
  );
}

function causeCode(err: unknown): string | undefined {
  const cause = (err as { cause?: { code?: unknown } } | undefined)?.cause;
  return typeof cause?.code === "string" ? cause.code : undefined;
}

/** The address clients dial: a wildcard listen address is reached on loopback. */
export function dialUrl(host: string, port: number): string {
  const dialHost = host === "0.0.0.0" || host === "::" ? "127.0.0.1" : host;
  return `http://${dialHost.includes(":") ? `[${dialHost}]` : dialHost}:${port}`;
}

export interface ControlPlaneClient {
  readonly url: string;
  /**
   * `GET /api/v1/health`: the parsed body (at least `message`). With `acceptUnhealthy`, a 503
   * that still carries a JSON body (a service is down) returns that body instead of throwing.
   */
  health(
    signal?: AbortSignal,
    options?: { readonly acceptUnhealthy?: boolean },
  ): Promise<Record<string, unknown>>;
  /** One JSON-RPC call; a JSON-RPC error becomes the MsbError named in `error.data.code`. */
  rpc(method: string, params: Record<string, unknown>, signal?: AbortSignal): Promise<unknown>;
  /**
   * One JSON-RPC call answered as it came: the HTTP status and the JSON-RPC response (undefined
   * when the body is not JSON). For tests and probes that look at error answers themselves.
   */
  answer(
    method: string,
    params: unknown,
    signal?: AbortSignal,
  ): Promise<{ status: number; body: RpcResponse | undefined }>;
}

export interface ControlPlaneClientOptions {
  readonly url: string;
  /** Sent as `Authorization: Bearer`; absent for a `--dev` server. */
  readonly apiKey?: string;
  /** Per-request deadline. Default 10 s. */
  readonly timeoutMs?: number;
}

export function createControlPlaneClient(options: ControlPlaneClientOptions): ControlPlaneClient {
  const base = options.url.replace(/\/+$/, "");
  const timeoutMs = options.timeoutMs ?? 10_000;

  const request = async (path: string, init: RequestInit, signal?: AbortSignal) => {
    const deadline = AbortSignal.timeout(timeoutMs);
    const combined = signal === undefined ? deadline : AbortSignal.any([signal, deadline]);
    try {
      return await fetch(`${base}${path}`, { ...init, signal: combined });
    } catch (err) {
      const code = causeCode(err);
      if (code !== undefined && UNREACHABLE.has(code)) throw notRunning(base, err);
      if (deadline.aborted) {
        throw new MsbError(
          "TIMEOUT",
          `msb server at ${base} did not answer ${path} within ${timeoutMs} ms. Next step: check \`msb server status\` and \`msb server log\`.`,
          { cause: err, details: { url: base, path, timeoutMs } },
        );
      }
      throw notRunning(base, err);
    }
  };

  const post = async (method: string, params: unknown, signal?: AbortSignal) => {
    const headers: Record<string, string> = { "content-type": "application/json" };
    if (options.apiKey !== undefined) headers["authorization"] = `Bearer ${options.apiKey}`;
    const res = await request(
      "/api/v1/rpc",
      {
        method: "POST",
        headers,
        body: JSON.stringify({ jsonrpc: "2.0", method, params, id: 1 }),
      },
      signal,
    );
    const body: unknown = await res.json().catch(() => undefined);
    return { status: res.status, body };
  };

  return {
    url: base,
    async health(signal, healthOptions) {
      // With the key, health includes details (VM counts, templates, isolation).
      const headers: Record<string, string> = {};
      if (options.apiKey !== undefined) headers["authorization"] = `Bearer ${options.apiKey}`;
      const res = await request("/api/v1/health", { method: "GET", headers }, signal);
      const body: unknown = await res.json().catch(() => undefined);
      const usable = res.ok || healthOptions?.acceptUnhealthy === true;
      if (!usable || body === null || typeof body !== "object") {
        throw new MsbError(
          "SERVICE_UNAVAILABLE",
          `msb server at ${base} answered health with HTTP ${res.status}. Next step: look at \`msb server log --service control-plane\`.`,
          { details: { url: base, status: res.status } },
        );
      }
      return body as Record<string, unknown>;
    },
    async rpc(method, params, signal) {
      const { status, body } = await post(method, params, signal);
      return jsonRpcResult(base, method, status, body);
    },
    async answer(method, params, signal) {
      const { status, body } = await post(method, params, signal);
      return { status, body: body as RpcResponse | undefined };
    },
  };
}
