import type { ChildProcess } from "node:child_process";

/**
 * Stops a child the test started: SIGTERM, then SIGKILL if it still runs after `graceMs`;
 * resolves once `exited` (the child's "exit" event) has fired. Nothing to do if it is gone.
 */
export async function terminate(
  child: ChildProcess,
  exited: Promise<void>,
  graceMs: number,
): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}
