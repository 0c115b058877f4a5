import { execFile } from "node:child_process";
import { stat } from "node:fs/promises";
import { join } from "node:path";
import { promisify } from "node:util";
import { MsbError } from "@msb/errors";
import type { GuestArtifactsResolver } from "../vms/types.js";

const run = promisify(execFile);

export interface GuestArtifactsOptions {
  /** MSB_KERNEL; unset = `tools/kernel/build.sh --print-path` (never builds: that takes minutes). */
  readonly kernelPath: string | undefined;
  /** MSB_INITRAMFS; unset = `tools/agent/build.sh` (cached; a build takes seconds). */
  readonly initramfsPath: string | undefined;
  /** Repository root holding `tools/`, for the defaults. */
  readonly repoRoot: string;
  readonly cacheDir: string;
}

async function isFile(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isFile() === true;
}

async function lastLine(script: string, args: string[], cacheDir: string): Promise<string> {
  const { stdout } = await run("bash", [script, ...args], {
    timeout: 300_000,
    env: { ...process.env, MSB_CACHE_DIR: cacheDir },
    maxBuffer: 16 * 1024 * 1024,
  });
  return stdout.trim().split("\n").pop()?.trim() ?? "";
}

/**
 * Finds the guest kernel and the agent initramfs. A success is remembered; a failure is not,
 * so building the kernel while the vmm-agent runs is enough — no restart needed.
 */
export function createGuestArtifactsResolver(
  options: GuestArtifactsOptions,
): GuestArtifactsResolver {
  let found: { kernelPath: string; initramfsPath: string } | undefined;
  let pending: Promise<{ kernelPath: string; initramfsPath: string }> | undefined;

  async function resolve(): Promise<{ kernelPath: string; initramfsPath: string }> {
    const kernelPath =
      options.kernelPath ??
      (await lastLine(
        join(options.repoRoot, "tools/kernel/build.sh"),
        ["--print-path"],
        options.cacheDir,
      ).catch(() => ""));
    if (kernelPath === "" || !(await isFile(kernelPath))) {
      throw new MsbError(
        "KERNEL_MISSING",
        `The guest kernel is not built${kernelPath === "" ? "" : ` (${kernelPath})`}. Run tools/kernel/build.sh (about 5 minutes) or set MSB_KERNEL.`,
        { details: { kernelPath } },
      );
    }
    let initramfsPath = options.initramfsPath;
    if (initramfsPath === undefined) {
      try {
        initramfsPath = await lastLine(
          join(options.repoRoot, "tools/agent/build.sh"),
          [],
          options.cacheDir,
        );
      } catch (err) {
        throw new MsbError(
          "KERNEL_MISSING",
          `The guest agent initramfs could not be built: ${(err as Error).message.split("\n")[0] ?? ""}. Run tools/agent/build.sh or set MSB_INITRAMFS.`,
          { cause: err },
        );
      }
    }
    if (!(await isFile(initramfsPath))) {
      throw new MsbError(
        "KERNEL_MISSING",
        `The guest agent initramfs ${initramfsPath} does not exist. Run tools/agent/build.sh or set MSB_INITRAMFS.`,
        { details: { initramfsPath } },
      );
    }
    return { kernelPath, initramfsPath };
  }

  return async () => {
    if (found !== undefined) return found;
    pending ??= resolve().finally(() => (pending = undefined));
    found = await pending;
    return found;
  };
}
