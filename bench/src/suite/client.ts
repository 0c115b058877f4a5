import { MsbError, isErrorCode } from "@msb/errors";

/** A JSON-RPC client for one server, the way any HTTP client talks to msb. */
export interface RpcClient {
  readonly url: string;
  /** The method's result; a JSON-RPC error becomes an MsbError with the server's code. */
  call<T>(method: string, params: unknown): Promise<T>;
  /** The `/api/v1/health` body (also when it answers 503). */
  health(): Promise<Health>;
}

export interface TemplateHealth {
  readonly key: string;
  readonly image: string;
  readonly memory_mib: number;
  readonly state: string;
  readonly reason: string;
  readonly pool_ready: number;
  readonly pool_target: number;
}

export interface StartCounters {
  readonly pool_hits: number;
  readonly pool_misses: number;
  readonly template_restores: number;
  readonly cold_boots: number;
}

/** The parts of health the bench reads; every field beyond `message` may be absent. */
export interface Health {
  readonly message: string;
  readonly accelerator?: string;
  readonly services?: {
    readonly vmm?: {
      readonly vms_running?: number;
      readonly vms_paused?: number;
      readonly max_vms?: number;
      readonly starts?: StartCounters;
      readonly templates?: readonly TemplateHealth[];
    };
  };
}

/** `sandbox.start` with `details: true`. */
export interface StartDetails {
  readonly start_kind: string | null;
  readonly boot_ms: number | null;
}

export interface RunResult {
  readonly status: string;
  readonly output: readonly { stream: string; text: string }[];
}

export interface CommandResult {
  readonly exit_code: number;
  readonly success: boolean;
}

/** Every call has a deadline: VMs under TCG on a loaded machine are slow, never endless. */
export function createRpcClient(url: string, timeoutMs = 900_000): RpcClient {
  let id = 0;
  return {
    url,
    async call<T>(method: string, params: unknown): Promise<T> {
      let res: Response;
      try {
        res = await fetch(`${url}/api/v1/rpc`, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify({ jsonrpc: "2.0", method, params, id: ++id }),
          signal: AbortSignal.timeout(timeoutMs),
        });
      } catch (err) {
        const timedOut = err instanceof Error && err.name === "TimeoutError";
        throw new MsbError(
          timedOut ? "TIMEOUT" : "SERVICE_UNAVAILABLE",
          timedOut
            ? `${method} did not answer within ${timeoutMs} ms; see the server log.`
            : `${method}: the server at ${url} did not answer; is it still running?`,
          { cause: err },
        );
      }
      const body = (await res.json()) as {
        result?: T;
        error?: { message: string; data?: { code?: string } };
      };
      if (body.error !== undefined) {
        const code = body.error.data?.code;
        throw new MsbError(
          code !== undefined && isErrorCode(code) ? code : "INTERNAL",
          `${method}: ${body.error.message}`,
        );
      }
      return body.result as T;
    },
    async health() {
      const res = await fetch(`${url}/api/v1/health`, { signal: AbortSignal.timeout(30_000) });
      return (await res.json()) as Health;
    },
  };
}

/** The error code of a failed call, for counting failures by kind. */
export function codeOf(err: unknown): string {
  return err instanceof MsbError ? err.code : "INTERNAL";
}
