import { mkdir, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import { createHash, randomBytes } from "node:crypto";
import { join, resolve } from "node:path";
import { MsbError } from "@msb/errors";

/** The ids one vmm-agent hands to its VMs. */
export interface IdRange {
  readonly msbHome: string;
  readonly uidBase: number;
  readonly uidCount: number;
  /** Three gids from here (shared, public, any); the firewall chain is named by base + 1. */
  readonly gidBase: number;
}

interface Claim extends IdRange {
  readonly pid: number;
}

/** Host-wide, root-only: where each live vmm-agent records the ids it uses. */
export const DEFAULT_ID_RANGE_DIR = "/run/msb/id-ranges";

function overlaps(a: number, aCount: number, b: number, bCount: number): boolean {
  return a < b + bCount && b < a + aCount;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/**
 * Claims `range` for this process: CONFIG_INVALID when another live vmm-agent of another
 * MSB_HOME holds uids or gids that overlap (their VMs would share uids, one's stop would
 * remove the other's firewall chain). Claims of dead processes are dropped. Returns the
 * release (shutdown). The check and the write are not atomic: two agents started in the
 * same instant can both pass; the default ranges differ per home anyway.
 */
export async function claimIdRange(
  range: IdRange,
  dir = DEFAULT_ID_RANGE_DIR,
): Promise<() => Promise<void>> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const home = resolve(range.msbHome);
  for (const name of await readdir(dir)) {
    if (!name.endsWith(".json")) continue;
    const path = join(dir, name);
    const claim = await readFile(path, "utf8")
      .then((text) => JSON.parse(text) as Claim)
      .catch(() => undefined);
    if (claim === undefined || !alive(claim.pid)) {
      await rm(path, { force: true });
      continue;
    }
    if (claim.msbHome === home) continue;
    const uids = overlaps(range.uidBase, range.uidCount, claim.uidBase, claim.uidCount);
    const gids = overlaps(range.gidBase, 3, claim.gidBase, 3);
    if (uids || gids) {
      throw new MsbError(
        "CONFIG_INVALID",
        `The VM ${uids ? `uids ${range.uidBase}-${range.uidBase + range.uidCount - 1}` : `gids ${range.gidBase}-${range.gidBase + 2}`} overlap those of the vmm-agent of ${claim.msbHome} (pid ${claim.pid}): their VMs would share uids and firewall rules. Set MSB_VM_UID_BASE and MSB_VM_GID_BASE to a free range, or leave them unset (each MSB_HOME then gets its own).`,
        { details: { otherHome: claim.msbHome, otherPid: claim.pid } },
      );
    }
  }
  const path = join(dir, `${createHash("sha256").update(home).digest("hex").slice(0, 16)}.json`);
  const tmp = `${path}.tmp-${randomBytes(4).toString("hex")}`;
  const claim: Claim = { ...range, msbHome: home, pid: process.pid };
  await writeFile(tmp, JSON.stringify(claim), { mode: 0o600 });
  await rename(tmp, path);
  return async () => {
    const now = await readFile(path, "utf8")
      .then((text) => JSON.parse(text) as Claim)
      .catch(() => undefined);
    if (now?.pid === process.pid) await rm(path, { force: true });
  };
}
