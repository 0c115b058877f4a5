import type { ExitInfo } from "./hypervisor.js";

/** "exit code 1" or "killed by SIGKILL". */
export function describeExit(info: ExitInfo): string {
  if (info.signal !== null) return `killed by ${info.signal}`;
  return `exit code ${info.code ?? "unknown"}`;
}
