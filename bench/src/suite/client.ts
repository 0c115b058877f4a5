import { MsbError } from "@msb/errors";
import { createControlPlaneClient, type Health } from "@msb/wire";

// The bench talks to msb through the one client of libs/wire, the way any HTTP client does;
// the result shapes are the wire's.
export type {
  CommandResult,
  Health,
  ReplResult as RunResult,
  StartCounters,
  StartDetails,
  TemplateHealth,
} from "@msb/wire";

/** A JSON-RPC client for one server. */
export interface RpcClient {
  readonly url: string;
  /** The method's result; a JSON-RPC error becomes an MsbError with the server's code. */
  call<T>(method: string, params: Record<string, unknown>): Promise<T>;
  /** The `/api/v1/health` body (also when it answers 503). */
  health(): Promise<Health>;
}

/** Every call has a deadline: VMs under TCG on a loaded machine are slow, never endless. */
export function createRpcClient(url: string, timeoutMs = 900_000): RpcClient {
  const client = createControlPlaneClient({ url, timeoutMs });
  return {
    url,
    async call<T>(method: string, params: Record<string, unknown>): Promise<T> {
      return (await client.rpc(method, params)) as T;
    },
    async health() {
      return (await client.health(undefined, { acceptUnhealthy: true })) as Health;
    },
  };
}

/** The error code of a failed call, for counting failures by kind. */
export function codeOf(err: unknown): string {
  return err instanceof MsbError ? err.code : "INTERNAL";
}
