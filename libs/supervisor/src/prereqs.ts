import { spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { MsbError } from "@msb/errors";

/** The default images every fresh install should be able to start without a registry. */
export const DEFAULT_IMAGES = ["microsandbox/python", "microsandbox/node"] as const;

export interface PrereqDeps {
  /** Repository root (holds `tools/`). */
  readonly root: string;
  readonly home: string;
  readonly env: NodeJS.ProcessEnv;
  /** One progress line of a step (`kernel`, `agent`, `images`), for people. */
  readonly onProgress: (step: string, line: string) => void;
  readonly signal?: AbortSignal;
}

export interface PrereqOptions {
  /** False with `--no-build`: only look, never build. */
  readonly build: boolean;
}

/** What was found or built; paths go to the vmm-agent's environment. */
export interface Prereqs {
  readonly kernel?: string;
  readonly initramfs?: string;
  /** Human notes about what is missing when building was skipped or impossible. */
  readonly warnings: readonly string[];
}

interface ScriptResult {
  readonly code: number;
  readonly lastStdoutLine: string;
  readonly stderrTail: readonly string[];
}

/** Runs a build script; its stderr lines are progress, its last stdout line the result. */
function runScript(
  step: string,
  script: string,
  args: readonly string[],
  deps: PrereqDeps,
  showProgress: boolean,
): Promise<ScriptResult> {
  return new Promise((resolve, reject) => {
    const child = spawn("bash", [script, ...args], {
      cwd: deps.root,
      env: { ...deps.env, MSB_HOME: deps.home },
      stdio: ["ignore", "pipe", "pipe"],
      ...(deps.signal === undefined ? {} : { signal: deps.signal }),
    });
    let lastStdoutLine = "";
    const stderrTail: string[] = [];
    createInterface({ input: child.stdout }).on("line", (line) => {
      if (line.trim() !== "") lastStdoutLine = line.trim();
    });
    createInterface({ input: child.stderr }).on("line", (line) => {
      stderrTail.push(line);
      if (stderrTail.length > 15) stderrTail.shift();
      if (showProgress) deps.onProgress(step, line);
    });
    child.once("error", reject);
    child.once("close", (code) => resolve({ code: code ?? 1, lastStdoutLine, stderrTail }));
  });
}

function buildFailed(step: string, script: string, result: ScriptResult): MsbError {
  const code = step === "images" ? "IMAGE_BUILD_FAILED" : "KERNEL_MISSING";
  return new MsbError(
    code,
    `Building the guest ${step} failed (${script} exited with ${result.code}). Last lines:\n${result.stderrTail
      .map((l) => `  ${l}`)
      .join(
        "\n",
      )}\nNext step: fix the cause above and start again, or skip the check with \`--no-build\`.`,
    { details: { step, script, exitCode: result.code } },
  );
}

function hasImage(home: string, image: string): boolean {
  try {
    return readFileSync(join(home, "images", "refs.json"), "utf8").includes(
      `docker.io/${image}:latest`,
    );
  } catch {
    return false;
  }
}

/**
 * Makes sure what a sandbox needs exists before the services start: the guest kernel, the
 * agent initramfs and the default images. Missing pieces are built with their own scripts
 * (progress shown), unless `build` is false, in which case they are only reported.
 */
export async function ensurePrereqs(deps: PrereqDeps, options: PrereqOptions): Promise<Prereqs> {
  const warnings: string[] = [];
  const tools = join(deps.root, "tools");

  let kernel = deps.env["MSB_KERNEL"];
  if (kernel !== undefined) {
    if (!existsSync(kernel)) {
      throw new MsbError(
        "KERNEL_MISSING",
        `MSB_KERNEL points to ${kernel}, which does not exist. Next step: unset MSB_KERNEL to use the built kernel, or build one with tools/kernel/build.sh.`,
        { details: { kernel } },
      );
    }
  } else {
    const script = join(tools, "kernel", "build.sh");
    const where = await runScript("kernel", script, ["--print-path"], deps, false);
    if (where.code === 0 && existsSync(where.lastStdoutLine)) kernel = where.lastStdoutLine;
    else if (options.build) {
      deps.onProgress("kernel", "building the guest kernel (about 5 minutes on 2 cores, once)");
      const built = await runScript("kernel", script, [], deps, true);
      if (built.code !== 0 || !existsSync(built.lastStdoutLine))
        throw buildFailed("kernel", script, built);
      kernel = built.lastStdoutLine;
    } else {
      kernel = undefined;
      warnings.push(
        "the guest kernel is not built (tools/kernel/build.sh); sandboxes cannot start until it is",
      );
    }
  }

  let initramfs = deps.env["MSB_INITRAMFS"];
  if (initramfs === undefined && options.build) {
    const script = join(tools, "agent", "build.sh");
    // Cached builds answer at once; a real build prints its progress.
    const built = await runScript("agent", script, [], deps, true);
    if (built.code !== 0 || !existsSync(built.lastStdoutLine))
      throw buildFailed("agent", script, built);
    initramfs = built.lastStdoutLine;
  }

  const missing = DEFAULT_IMAGES.filter((image) => !hasImage(deps.home, image));
  if (missing.length > 0) {
    const script = join(tools, "images", "build-all.sh");
    if (options.build && existsSync(script)) {
      deps.onProgress("images", `building ${missing.join(", ")}`);
      const built = await runScript("images", script, [], deps, true);
      if (built.code !== 0) throw buildFailed("images", script, built);
    } else {
      warnings.push(
        `image${missing.length > 1 ? "s" : ""} ${missing.join(", ")} not built yet; sandbox.start with ${missing.length > 1 ? "them" : "it"} will pull or fail until ${existsSync(script) ? "tools/images/build-all.sh runs" : "they are built"}`,
      );
    }
  }

  return {
    ...(kernel === undefined ? {} : { kernel }),
    ...(initramfs === undefined ? {} : { initramfs }),
    warnings,
  };
}
