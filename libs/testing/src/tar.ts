/** One entry of a hand-made tar archive. Paths are written verbatim (even `../x` or `/x`). */
export interface TarEntry {
  readonly path: string;
  /** Default "file". */
  readonly type?: "file" | "dir" | "symlink" | "hardlink";
  readonly content?: string | Uint8Array;
  /** Target of a symlink or hardlink, verbatim. */
  readonly linkpath?: string;
  /** Default 0o644 for files, 0o755 for dirs, 0o777 for links. */
  readonly mode?: number;
  readonly uid?: number;
  readonly gid?: number;
  /** Seconds since the epoch. Default 1700000000. */
  readonly mtime?: number;
}

const TYPE_FLAG = { file: "0", hardlink: "1", symlink: "2", dir: "5" } as const;

function octal(value: number, width: number): string {
  return value.toString(8).padStart(width - 1, "0") + "\0";
}

/**
 * A POSIX ustar archive of `entries`, written byte by byte so tests can build archives that
 * well-behaved tar writers refuse to produce (`../../etc/passwd`, absolute paths, links out
 * of the tree). Paths and link targets must fit ustar's 100-byte fields.
 */
export function tarArchive(entries: readonly TarEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const type = entry.type ?? "file";
    const content =
      entry.content === undefined
        ? Buffer.alloc(0)
        : typeof entry.content === "string"
          ? Buffer.from(entry.content)
          : Buffer.from(entry.content);
    const size = type === "file" ? content.length : 0;
    const path = type === "dir" && !entry.path.endsWith("/") ? `${entry.path}/` : entry.path;
    if (Buffer.byteLength(path) > 100 || Buffer.byteLength(entry.linkpath ?? "") > 100) {
      throw new Error(`tar entry path too long for ustar: ${path}`);
    }
    const header = Buffer.alloc(512);
    header.write(path, 0, 100);
    const mode = entry.mode ?? (type === "dir" ? 0o755 : type === "file" ? 0o644 : 0o777);
    header.write(octal(mode, 8), 100);
    header.write(octal(entry.uid ?? 0, 8), 108);
    header.write(octal(entry.gid ?? 0, 8), 116);
    header.write(octal(size, 12), 124);
    header.write(octal(entry.mtime ?? 1_700_000_000, 12), 136);
    header.write("        ", 148);
    header.write(TYPE_FLAG[type], 156);
    header.write(entry.linkpath ?? "", 157, 100);
    header.write("ustar\0", 257);
    header.write("00", 263);
    let sum = 0;
    for (const byte of header) sum += byte;
    header.write(octal(sum, 7) + " ", 148);
    blocks.push(header);
    if (size > 0) {
      blocks.push(content, Buffer.alloc((512 - (size % 512)) % 512));
    }
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}
