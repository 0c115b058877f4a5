import { connect } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { createControlPlaneClient } from "@msb/wire";

const POLL_MS = 100;

function tryConnect(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ path });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

function abortError(signal: AbortSignal): unknown {
  return signal.reason ?? new Error("aborted");
}

/** Resolves once a unix socket accepts a connection; rejects when `signal` aborts. */
export async function waitForSocket(path: string, signal: AbortSignal): Promise<void> {
  while (!signal.aborted) {
    if (await tryConnect(path)) return;
    await sleep(POLL_MS, undefined, { signal }).catch(() => undefined);
  }
  throw abortError(signal);
}

/** Resolves with the health body once `GET /api/v1/health` answers 200; rejects on abort. */
export async function waitForHealth(
  url: string,
  signal: AbortSignal,
): Promise<Record<string, unknown>> {
  const client = createControlPlaneClient({ url, timeoutMs: 2_000 });
  while (!signal.aborted) {
    try {
      return await client.health(signal);
    } catch {
      await sleep(POLL_MS, undefined, { signal }).catch(() => undefined);
    }
  }
  throw abortError(signal);
}
