import { execFileSync } from "node:child_process";
import { readFileSync, readdirSync } from "node:fs";

/** One QEMU process of the server under test. */
export interface QemuProcess {
  readonly pid: number;
  readonly rssKib: number;
  readonly pssKib: number;
  /** utime + stime, in clock ticks. */
  readonly cpuTicks: number;
}

/** `Rss:` and `Pss:` of `/proc/PID/smaps_rollup`, in KiB. */
export function parseSmapsRollup(text: string): { rssKib: number; pssKib: number } {
  const field = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
  return { rssKib: field("Rss"), pssKib: field("Pss") };
}

/** utime + stime (fields 14 and 15) of `/proc/PID/stat`; the command may hold spaces and parentheses. */
export function parseStatCpuTicks(text: string): number {
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // fields[0] is field 3 (state), so utime (14) is fields[11] and stime (15) fields[12].
  return Number(fields[11] ?? 0) + Number(fields[12] ?? 0);
}

let clockTicks: number | undefined;
/** Clock ticks per second (`getconf CLK_TCK`, 100 on Linux when it cannot be read). */
export function ticksPerSecond(): number {
  if (clockTicks === undefined) {
    try {
      clockTicks = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100;
    } catch {
      clockTicks = 100;
    }
  }
  return clockTicks;
}

/**
 * Every live QEMU process whose command line mentions `home` (the server's MSB_HOME: its VMs'
 * sockets and disks live there), sandboxes and warm-pool VMs alike. Processes that exit while
 * being read are skipped.
 */
export function qemuProcesses(home: string): QemuProcess[] {
  const found: QemuProcess[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (!readFileSync(`/proc/${entry}/comm`, "utf8").startsWith("qemu-system")) continue;
      if (!readFileSync(`/proc/${entry}/cmdline`, "utf8").includes(home)) continue;
      const memory = parseSmapsRollup(readFileSync(`/proc/${entry}/smaps_rollup`, "utf8"));
      const cpuTicks = parseStatCpuTicks(readFileSync(`/proc/${entry}/stat`, "utf8"));
      found.push({ pid: Number(entry), ...memory, cpuTicks });
    } catch {
      // Gone meanwhile, or not readable.
    }
  }
  return found;
}

/** Host memory and CPU of the server's QEMU processes over `windowMs`. */
export interface QemuCost {
  readonly processes: number;
  readonly rssMib: number;
  readonly pssMib: number;
  /** Percent of one host core, all processes together, averaged over the window. */
  readonly cpuPercent: number;
  readonly windowMs: number;
}

export async function measureQemuCost(home: string, windowMs: number): Promise<QemuCost> {
  const before = new Map(qemuProcesses(home).map((p) => [p.pid, p]));
  const t0 = performance.now();
  await new Promise((resolve) => setTimeout(resolve, windowMs));
  const after = qemuProcesses(home);
  const seconds = (performance.now() - t0) / 1000;
  let ticks = 0;
  for (const p of after) {
    const b = before.get(p.pid);
    if (b !== undefined) ticks += p.cpuTicks - b.cpuTicks;
  }
  const mib = (kib: number) => Math.round((kib / 1024) * 10) / 10;
  return {
    processes: after.length,
    rssMib: mib(after.reduce((s, p) => s + p.rssKib, 0)),
    pssMib: mib(after.reduce((s, p) => s + p.pssKib, 0)),
    cpuPercent: Math.round((ticks / ticksPerSecond() / seconds) * 100 * 100) / 100,
    windowMs,
  };
}
