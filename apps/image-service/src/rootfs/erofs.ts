import { execFile, spawn } from "node:child_process";
import { promisify } from "node:util";
import { MsbError } from "@msb/errors";

const execFileAsync = promisify(execFile);

let compressors: Promise<string[]> | undefined;

/** The compressors this mkfs.erofs supports ("Available compressors are: lz4hc, lz4"). */
export function erofsCompressors(binary = "mkfs.erofs"): Promise<string[]> {
  compressors ??= execFileAsync(binary, ["--help"])
    .then(({ stdout, stderr }) => `${stdout}\n${stderr}`)
    .catch(
      (err: { stdout?: string; stderr?: string }) => `${err.stdout ?? ""}\n${err.stderr ?? ""}`,
    )
    .then((text) => {
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
  const args = [
    ...(compression === "none" ? [] : [`-z${compression}`]),
    "--quiet",
    outPath,
    sourceDir,
  ];
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
