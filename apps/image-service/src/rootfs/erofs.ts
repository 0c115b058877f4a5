import { execFile, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { promisify } from "node:util";
import { MsbError } from "@msb/errors";

const execFileAsync = promisify(execFile);

let compressors: Promise<string[]> | undefined;
let version: Promise<string> | undefined;

/** Output of a tool run that may exit non-zero (old mkfs.erofs has no --version but prints it). */
function output(binary: string, args: string[]): Promise<string> {
  return execFileAsync(binary, args)
    .then(({ stdout, stderr }) => `${stdout}\n${stderr}`)
    .catch(
      (err: { stdout?: string; stderr?: string }) => `${err.stdout ?? ""}\n${err.stderr ?? ""}`,
    );
}

/** "mkfs.erofs 1.5" / "mkfs.erofs (erofs-utils) 1.7.1"; "unknown" when it cannot be told. */
export function erofsVersion(binary = "mkfs.erofs"): Promise<string> {
  version ??= output(binary, ["--version"]).then(
    (text) =>
      text
        .split("\n")
        .map((l) => l.trim())
        .find((l) => l.startsWith("mkfs.erofs") && !l.includes("unrecognized")) ?? "unknown",
  );
  return version;
}

/** The arguments {@link mkfsErofs} passes before `FILE DIRECTORY`. */
function mkfsOptions(compression: string): string[] {
  return [...(compression === "none" ? [] : [`-z${compression}`]), "--quiet"];
}

/**
 * What turns an unpacked tree into an erofs file. `identity` names everything besides the
 * tree that determines the output bytes (tool version, options): it is part of the key of
 * the machine-wide rootfs cache. Tests substitute their own runner.
 */
export interface MkfsRunner {
  identity(): Promise<string>;
  run(sourceDir: string, outPath: string, signal?: AbortSignal): Promise<{ compression: string }>;
}

/** The real `mkfs.erofs` on PATH (or `binary`). */
export function mkfsErofsRunner(binary = "mkfs.erofs"): MkfsRunner {
  return {
    async identity() {
      const available = await erofsCompressors(binary);
      const compression = available.includes("lz4hc") ? "lz4hc" : "none";
      const text = JSON.stringify([await erofsVersion(binary), mkfsOptions(compression)]);
      return createHash("sha256").update(text).digest("hex").slice(0, 12);
    },
    run: (sourceDir, outPath, signal) =>
      mkfsErofs(sourceDir, outPath, { binary, ...(signal ? { signal } : {}) }),
  };
}

/** The compressors this mkfs.erofs supports ("Available compressors are: lz4hc, lz4"). */
export function erofsCompressors(binary = "mkfs.erofs"): Promise<string[]> {
  compressors ??= output(binary, ["--help"]).then((text) => {
    const line = /Available compressors are: (.*)/.exec(text)?.[1] ?? "";
    return line.split(/[,\s]+/).filter((c) => c !== "");
  });
  return compressors;
}

/**
 * Writes the directory `sourceDir` as an erofs image at `outPath` (lz4hc when this
 * mkfs.erofs has it, uncompressed otherwise). Owners, modes, times and device nodes are
 * kept as they are on disk.
 */
export async function mkfsErofs(
  sourceDir: string,
  outPath: string,
  options: { signal?: AbortSignal; binary?: string } = {},
): Promise<{ compression: string }> {
  const binary = options.binary ?? "mkfs.erofs";
  const available = await erofsCompressors(binary);
  const compression = available.includes("lz4hc") ? "lz4hc" : "none";
  const args = [...mkfsOptions(compression), outPath, sourceDir];
  const output: string[] = [];
  const code = await new Promise<number | null>((resolve, reject) => {
    const child = spawn(binary, args, {
      stdio: ["ignore", "pipe", "pipe"],
      ...(options.signal ? { signal: options.signal } : {}),
    });
    child.stdout.on("data", (d: Buffer) => output.push(d.toString()));
    child.stderr.on("data", (d: Buffer) => output.push(d.toString()));
    child.once("error", reject);
    child.once("close", resolve);
  }).catch((err: unknown) => {
    if (options.signal?.aborted === true) throw options.signal.reason;
    throw new MsbError(
      "ROOTFS_BUILD_FAILED",
      `mkfs.erofs could not be run (${(err as Error).message}). Install erofs-utils (tools/setup.sh does).`,
      { cause: err },
    );
  });
  if (code !== 0) {
    const tail = output.join("").trim().split("\n").slice(-5).join(" | ");
    throw new MsbError(
      "ROOTFS_BUILD_FAILED",
      `mkfs.erofs exited with ${code}: ${tail}. Check free disk space under MSB_HOME.`,
      { details: { exitCode: code } },
    );
  }
  return { compression };
}
