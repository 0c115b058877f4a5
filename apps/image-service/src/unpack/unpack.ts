import { execFile } from "node:child_process";
import {
  chmod,
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  open,
  readdir,
  readlink,
  rm,
  symlink,
  utimes,
} from "node:fs/promises";
import { posix } from "node:path";
import type { Readable } from "node:stream";
import { promisify } from "node:util";
import { createGunzip } from "node:zlib";
import { MsbError } from "@msb/errors";
import { throwIfAborted } from "@msb/runtime";
import { Parser, type ReadEntry } from "tar";
import type { LayerCompression } from "../registry/manifest.js";

const execFileAsync = promisify(execFile);

export const WHITEOUT_PREFIX = ".wh.";
export const OPAQUE_MARKER = ".wh..wh..opq";
const MAX_SYMLINK_HOPS = 40;

/** A file whose setuid/setgid bits were not applied on the host. */
export interface StrippedMode {
  /** Path inside the image, without a leading slash. */
  readonly path: string;
  /** The mode the layer asked for (permission bits incl. setuid/setgid/sticky). */
  readonly mode: number;
}

/** A device node the layer holds: recorded, never created on the host. */
export interface DeviceEntry {
  readonly path: string;
  readonly type: "char" | "block";
  readonly major: number;
  readonly minor: number;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

/** Counts from unpacking one layer. */
export interface UnpackStats {
  entries: number;
  files: number;
  bytes: number;
  /** Bytes of the uncompressed tar stream (what the size caps count). */
  streamBytes: number;
  whiteouts: number;
  /** Entries msb cannot represent (sockets, unknown types, device nodes). */
  skipped: number;
  /** Files written without their setuid/setgid bits. */
  stripped: StrippedMode[];
  /** Device nodes (char/block) the layer holds, not created. */
  devices: DeviceEntry[];
}

export interface UnpackLayerOptions {
  readonly compression: LayerCompression;
  /** Names the layer in errors. */
  readonly digest: string;
  readonly signal?: AbortSignal;
  /**
   * Cap on the uncompressed tar stream of this layer (a gzip bomb stops here with
   * IMAGE_LAYER_INVALID, reason "too large"). Default: no cap.
   */
  readonly maxBytes?: number;
  /** The setting that sets `maxBytes`, named in the error. Default MSB_IMAGE_MAX_LAYER_BYTES. */
  readonly maxBytesSetting?: string;
}

/** Setuid and setgid: a hostile image must not plant privileged executables on the host. */
const PRIVILEGE_BITS = 0o6000;

function refuse(digest: string, entry: string, why: string): MsbError {
  return new MsbError(
    "IMAGE_LAYER_INVALID",
    `Layer ${digest} has an entry msb refuses to unpack: '${entry}' ${why}. Rebuild the image without it; msb never writes outside the image root.`,
    { details: { digest, entry, reason: why } },
  );
}

/**
 * Splits a tar path into clean components: strips `./` and trailing slashes, refuses
 * absolute paths and any `..` component (naming the entry).
 */
export function entryComponents(raw: string, digest: string): string[] {
  if (raw.startsWith("/")) throw refuse(digest, raw, "is an absolute path");
  const parts = raw.split("/").filter((p) => p !== "" && p !== ".");
  if (parts.includes("..")) throw refuse(digest, raw, "contains '..'");
  return parts;
}

/**
 * Applies one OCI layer (a tar stream, compressed as stated) on top of `root`, the result of
 * the layers below it, with the OCI semantics: `.wh.<name>` deletes `<name>` from lower
 * layers, `.wh..wh..opq` hides everything lower layers put in that directory; hardlinks,
 * symlinks, modes, owners and times are kept. Entries are refused (IMAGE_LAYER_INVALID,
 * naming the entry) when they are absolute, contain `..`, or would be written through a
 * symlink that points outside the root (absolute target, or `..` above the root). Symlinks
 * that stay inside are followed (`bin -> usr/bin` then `bin/x` writes `usr/bin/x`).
 * xattrs are not applied: node-tar drops SCHILY.xattr records and Node has no setxattr.
 * Device nodes are made with mknod when their numbers are known (see below).
 */
export async function unpackLayer(
  root: string,
  input: Readable,
  options: UnpackLayerOptions,
): Promise<UnpackStats> {
  const { digest, signal } = options;
  if (options.compression === "zstd") {
    input.destroy();
    throw new MsbError(
      "IMAGE_LAYER_INVALID",
      `zstd layers unsupported: layer ${digest} is tar+zstd and this Node.js (${process.version}) has no zstd. Use an image with gzip layers.`,
      { details: { digest } },
    );
  }
  const stats: UnpackStats = {
    entries: 0,
    files: 0,
    bytes: 0,
    streamBytes: 0,
    whiteouts: 0,
    skipped: 0,
    stripped: [],
    devices: [],
  };
  // Paths (absolute, resolved) this layer wrote: an opaque marker must not hide them.
  const written = new Set<string>();
  // Directory times are set last: writing children would change them again.
  const dirTimes: { path: string; mtime: Date }[] = [];
  // Resolved parent directories, valid until this layer removes or replaces something.
  const resolved = new Map<string, string>();

  const abs = (parts: readonly string[]): string => posix.join(root, ...parts);

  /** Resolves (and creates) the directory `parts` inside root without leaving it. */
  async function resolveDir(parts: readonly string[], entry: string): Promise<string[]> {
    const key = parts.join("/");
    const hit = resolved.get(key);
    if (hit !== undefined) return hit === "" ? [] : hit.split("/");
    const queue = [...parts];
    let cur: string[] = [];
    let hops = 0;
    while (queue.length > 0) {
      const c = queue.shift() as string;
      const path = abs([...cur, c]);
      const st = await lstat(path).catch(() => undefined);
      if (st === undefined) {
        await mkdir(path, { mode: 0o755 });
        cur.push(c);
      } else if (st.isSymbolicLink()) {
        hops += 1;
        if (hops > MAX_SYMLINK_HOPS) throw refuse(digest, entry, "goes through a symlink loop");
        const target = await readlink(path);
        const shown = posix.join(...cur, c);
        if (posix.isAbsolute(target)) {
          throw refuse(
            digest,
            entry,
            `is written through symlink '${shown}' -> '${target}', which points outside the root`,
          );
        }
        const joined = posix.normalize(posix.join(...cur, target));
        if (joined === ".." || joined.startsWith("../")) {
          throw refuse(
            digest,
            entry,
            `is written through symlink '${shown}' -> '${target}', which points outside the root`,
          );
        }
        queue.unshift(...joined.split("/").filter((p) => p !== "" && p !== "."));
        cur = [];
      } else if (st.isDirectory()) {
        cur.push(c);
      } else {
        // A file where a directory is needed: the directory wins, as in overlayfs.
        await rm(path, { force: true });
        await mkdir(path, { mode: 0o755 });
        cur.push(c);
      }
    }
    resolved.set(key, cur.join("/"));
    return cur;
  }

  async function removeTree(path: string): Promise<void> {
    await rm(path, { recursive: true, force: true });
    resolved.clear();
  }

  async function setMeta(path: string, entry: ReadEntry, isLink: boolean): Promise<void> {
    await lchown(path, entry.uid ?? 0, entry.gid ?? 0);
    if (!isLink) await chmod(path, (entry.mode ?? 0o644) & 0o7777 & ~PRIVILEGE_BITS);
    const mtime = entry.mtime ?? new Date(0);
    if (isLink) await lutimes(path, mtime, mtime).catch(() => undefined);
    else await utimes(path, mtime, mtime);
  }

  async function handle(entry: ReadEntry): Promise<void> {
    throwIfAborted(signal, "unpacking a layer");
    stats.entries += 1;
    const raw = entry.path;
    const parts = entryComponents(raw, digest);
    if (parts.length === 0) {
      // The root itself ("./"): take its mode and owner, nothing else.
      if (entry.type === "Directory") {
        await lchown(root, entry.uid ?? 0, entry.gid ?? 0);
        await chmod(root, (entry.mode ?? 0o755) & 0o7777);
      }
      return;
    }
    const name = parts[parts.length - 1] as string;
    const parent = await resolveDir(parts.slice(0, -1), raw);
    const dest = abs([...parent, name]);

    if (name === OPAQUE_MARKER) {
      stats.whiteouts += 1;
      const dir = abs(parent);
      for (const child of await readdir(dir)) {
        const path = posix.join(dir, child);
        if (!written.has(path)) await removeTree(path);
      }
      return;
    }
    if (name.startsWith(WHITEOUT_PREFIX)) {
      stats.whiteouts += 1;
      const victim = name.slice(WHITEOUT_PREFIX.length);
      if (victim === "" || victim === "." || victim === "..")
        throw refuse(digest, raw, "is a malformed whiteout");
      await removeTree(abs([...parent, victim]));
      return;
    }

    const existing = await lstat(dest).catch(() => undefined);
    const type = entry.type;
    switch (type) {
      case "Directory":
      case "GNUDumpDir": {
        if (existing !== undefined && !existing.isDirectory()) await removeTree(dest);
        if (existing === undefined || !existing.isDirectory()) await mkdir(dest, { mode: 0o755 });
        await lchown(dest, entry.uid ?? 0, entry.gid ?? 0);
        await chmod(dest, (entry.mode ?? 0o755) & 0o7777);
        dirTimes.push({ path: dest, mtime: entry.mtime ?? new Date(0) });
        break;
      }
      case "File":
      case "OldFile":
      case "ContiguousFile": {
        if (existing !== undefined) await removeTree(dest);
        const handle = await open(dest, "wx", 0o600);
        try {
          for await (const chunk of entry as AsyncIterable<Buffer>) {
            await handle.write(chunk);
            stats.bytes += chunk.length;
          }
        } finally {
          await handle.close();
        }
        stats.files += 1;
        await setMeta(dest, entry, false);
        const mode = (entry.mode ?? 0o644) & 0o7777;
        if ((mode & PRIVILEGE_BITS) !== 0) stats.stripped.push({ path: parts.join("/"), mode });
        break;
      }
      case "SymbolicLink": {
        if (existing !== undefined) await removeTree(dest);
        await symlink(entry.linkpath ?? "", dest);
        resolved.clear();
        await setMeta(dest, entry, true);
        break;
      }
      case "Link": {
        const target = entryComponents(entry.linkpath ?? "", digest);
        if (target.length === 0) throw refuse(digest, raw, "is a hardlink to the root");
        const targetDir = await resolveDir(target.slice(0, -1), raw);
        const targetPath = abs([...targetDir, target[target.length - 1] as string]);
        const st = await lstat(targetPath).catch(() => undefined);
        if (st === undefined || st.isDirectory()) {
          throw refuse(
            digest,
            raw,
            `is a hardlink to '${entry.linkpath ?? ""}', which is missing or a directory`,
          );
        }
        if (targetPath === dest) break;
        if (existing !== undefined) await removeTree(dest);
        await link(targetPath, dest);
        break;
      }
      case "CharacterDevice":
      case "BlockDevice": {
        // Never made on the host: a world-writable /dev/mem twin in the scratch tree is a
        // host device for anyone who reaches it. The guest mounts devtmpfs on /dev anyway;
        // the entry is recorded (numbers as node-tar decodes them: 0,0 from GNU headers).
        stats.skipped += 1;
        stats.devices.push({
          path: parts.join("/"),
          type: type === "CharacterDevice" ? "char" : "block",
          major: entry.header.devmaj ?? 0,
          minor: entry.header.devmin ?? 0,
          mode: (entry.mode ?? 0) & 0o7777,
          uid: entry.uid ?? 0,
          gid: entry.gid ?? 0,
        });
        return;
      }
      case "FIFO": {
        if (existing !== undefined) await removeTree(dest);
        await execFileAsync("mknod", [dest, "p"]);
        await setMeta(dest, entry, false);
        break;
      }
      case "ContinuationFile":
      case "ExtendedHeader":
      case "GlobalExtendedHeader":
      case "Inode":
      case "NextFileHasLongLinkpath":
      case "NextFileHasLongPath":
      case "OldExtendedHeader":
      case "OldGnuLongPath":
      case "SolarisACL":
      case "SparseFile":
      case "TapeVolumeHeader":
      case "Unsupported":
        stats.skipped += 1;
        return;
    }
    written.add(dest);
  }

  const parser = new Parser({ strict: true });
  let failure: Error | undefined;
  let chain: Promise<void> = Promise.resolve();
  const fail = (err: unknown): void => {
    failure ??= err instanceof Error ? err : new Error(String(err));
  };
  parser.on("entry", (entry: ReadEntry) => {
    chain = chain
      .then(() => (failure === undefined ? handle(entry) : undefined))
      .catch(fail)
      .finally(() => entry.resume());
  });
  parser.on("error", (err: unknown) =>
    fail(
      new MsbError(
        "IMAGE_LAYER_INVALID",
        `Layer ${digest} is not a valid tar archive (${err instanceof Error ? err.message : String(err)}). Rebuild or re-pull the image.`,
        { details: { digest }, cause: err },
      ),
    ),
  );
  const ended = new Promise<void>((resolve) => {
    parser.once("end", () => resolve());
    parser.once("error", () => resolve());
  });

  let source: AsyncIterable<Buffer> = input;
  if (options.compression === "gzip") {
    const gunzip = createGunzip();
    input.once("error", (err) => gunzip.destroy(err));
    source = input.pipe(gunzip);
  }
  const tooLarge = (limitBytes: number): MsbError =>
    new MsbError(
      "IMAGE_LAYER_INVALID",
      `Layer ${digest} unpacks to more than ${limitBytes} bytes, the limit ${options.maxBytesSetting ?? "MSB_IMAGE_MAX_LAYER_BYTES"} sets; it was stopped there. Use a smaller image, or ask the operator to raise the limit.`,
      { details: { digest, reason: "too large", limitBytes } },
    );
  try {
    for await (const chunk of source) {
      if (failure !== undefined) break;
      stats.streamBytes += chunk.length;
      if (options.maxBytes !== undefined && stats.streamBytes > options.maxBytes) {
        fail(tooLarge(options.maxBytes));
        break;
      }
      if (!parser.write(chunk)) {
        await new Promise<void>((resolve) => parser.once("drain", () => resolve()));
      }
    }
  } catch (err) {
    fail(
      new MsbError(
        "IMAGE_LAYER_INVALID",
        `Layer ${digest} cannot be decompressed (${err instanceof Error ? err.message : String(err)}): the ${options.compression === "gzip" ? "gzip" : "tar"} data is corrupt. Re-pull or rebuild the image.`,
        { details: { digest }, cause: err },
      ),
    );
  } finally {
    input.destroy();
  }
  // Also after a failure: ending the parser ends an entry cut off mid-file, so the entry
  // handler waiting for its bytes finishes (a truncation warning cannot replace `failure`).
  parser.end();
  await ended;
  await chain;
  if (failure !== undefined) throw failure;
  for (const { path, mtime } of dirTimes.reverse()) {
    await utimes(path, mtime, mtime).catch(() => undefined);
  }
  return stats;
}
