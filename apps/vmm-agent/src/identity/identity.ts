import { constants } from "node:fs";
import { randomBytes } from "node:crypto";
import { mkdir, open, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { MsbError } from "@msb/errors";
import type { HeldVolume } from "../volumes/held-volume.js";
import type { ProcessCredentials } from "../hypervisor/hypervisor.js";
import {
  grantSearch,
  grantSearchFor,
  reclaimTree,
  revokeSearch,
  secureHome,
  setfacl,
  undoHeldGrants,
  undoRecordedGrants,
  type Grant,
} from "./grants.js";

/**
 * As whom a VM's QEMU runs:
 * - `dedicated`: a uid of its own from the configured range (no passwd entry needed);
 * - `volume-owner`: the owner of its volume directories (all owned by one non-root user);
 * - `server`: the vmm-agent's own user, when the vmm-agent is not root and cannot switch.
 */
export type QemuUserKind = "dedicated" | "volume-owner" | "server";

/** The network policies; the host firewall tells them apart by the QEMU's primary gid. */
export type VmNetworkPolicy = "none" | "public" | "any";

/** What a VM's QEMU runs as, and what was granted to it (undone by `release`). */
export interface VmIdentity {
  readonly vmId: string;
  readonly kind: QemuUserKind;
  /** Undefined for `server`: QEMU keeps the vmm-agent's credentials. */
  readonly credentials?: ProcessCredentials;
}

export interface VmIdentityOptions {
  /** True when the vmm-agent runs as root and can switch users. */
  readonly privileged: boolean;
  readonly uidBase: number;
  readonly uidCount: number;
  /** shared = base, public/none = base + 1, any = base + 2. */
  readonly gidBase: number;
  /**
   * Root-owned directory where volume grants are recorded until they are undone, so that a
   * vmm-agent killed with VMs running has them undone at its next start (`reapGrants`).
   * Never inside a VM's directory: that one is writable by the VM's uid.
   */
  readonly grantsDir?: string;
  /** More supplementary groups for every QEMU, e.g. the group of /dev/kvm. */
  readonly extraGroups?: readonly number[];
  /**
   * Directories holding what VMs own (sandboxes, templates, template RAM). When a dedicated
   * uid is released, and again before it is handed out, whatever in them that uid still owns
   * goes to root (0600/0700): the next VM given the uid reaches none of it.
   */
  readonly vmRoots?: readonly string[];
  /**
   * MSB_HOME: kept 0700 with no rights for others on what is directly in it (database, WAL,
   * images, sockets), so that the per-VM search right on the way to a VM's own directory
   * opens nothing else.
   */
  readonly home?: string;
}

/** The three gids VM processes use. */
export interface VmGids {
  /** Supplementary group of every VM: read-only artifacts shared by VMs (templates). */
  readonly shared: number;
  /** Primary gid of VMs whose network is `public` or `none`. */
  readonly publicNet: number;
  /** Primary gid of VMs whose network is `any`. */
  readonly anyNet: number;
}

export function vmGids(gidBase: number): VmGids {
  return { shared: gidBase, publicNet: gidBase + 1, anyNet: gidBase + 2 };
}

/**
 * The rule for volumes (pure, so it is unit-tested):
 * - not root: `server` (nothing else is possible);
 * - every volume directory owned by the same non-root uid outside the VM range: that uid, so
 *   files the guest creates belong to the directory's owner and nothing on the host changes;
 * - otherwise (no volumes, a root-owned or a mixed set): a `dedicated` uid, and each volume
 *   directory gets a POSIX ACL entry for exactly that uid (rwx, or r-x when read-only),
 *   removed when the VM stops.
 */
export function decideQemuUser(input: {
  readonly privileged: boolean;
  readonly volumeOwnerUids: readonly number[];
  readonly uidBase: number;
  readonly uidCount: number;
}): { kind: "server" } | { kind: "volume-owner"; uid: number } | { kind: "dedicated" } {
  if (!input.privileged) return { kind: "server" };
  const [first] = input.volumeOwnerUids;
  const inRange = (uid: number): boolean =>
    uid >= input.uidBase && uid < input.uidBase + input.uidCount;
  if (
    first !== undefined &&
    first !== 0 &&
    !inRange(first) &&
    input.volumeOwnerUids.every((uid) => uid === first)
  ) {
    return { kind: "volume-owner", uid: first };
  }
  return { kind: "dedicated" };
}

/**
 * How a VM may use a file (see `prepareFileForVm`):
 * - `own`: owned by the VM's uid, 0600 (file) or 0700 (directory): only this VM reaches it;
 * - `shared-read`: owner = the vmm-agent, group = the shared VM gid, 0640/0750: every VM may
 *   read it, none may write it;
 * - `shared-rw`: the same with 0660/0770: every VM may open it for writing. Only for a
 *   template's RAM file: QEMU 7.2 opens a `memory-backend-file` read-write even when it maps
 *   it privately (share=off) and `readonly=on` would make guest RAM a ROM (`rom=off` exists
 *   from QEMU 8.2 on); clones never write it, but a QEMU escape could (docs/security.md);
 * - `private`: owner = the vmm-agent, its group, 0600/0700: no VM reaches it any more (a
 *   template's scratch disk once its builder VM is gone, so that a later VM given the same
 *   uid cannot change what every clone copies).
 */
export type FileAccess = "own" | "shared-read" | "shared-rw" | "private";

/** Mode of a file (or directory) for each access kind. */
const MODES: Record<FileAccess, { file: number; dir: number }> = {
  own: { file: 0o600, dir: 0o700 },
  "shared-read": { file: 0o640, dir: 0o750 },
  "shared-rw": { file: 0o660, dir: 0o770 },
  private: { file: 0o600, dir: 0o700 },
};

/**
 * Makes `path` usable by a VM's QEMU (or no longer usable, `private`), never following a
 * symlink (the VM's directory is writable by its uid, so anything in it may have been
 * swapped for a link to a host file). See `FileAccess`. A no-op for a QEMU that runs as the
 * server's user. The directories above `path` must also be searchable by the VM: see
 * `grantSearch`.
 */
export async function prepareFileForVm(
  path: string,
  identity: VmIdentity,
  access: FileAccess,
  gids: VmGids,
): Promise<void> {
  const creds = identity.credentials;
  if (creds === undefined) return;
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW).catch(
    (err: NodeJS.ErrnoException) => {
      throw new MsbError(
        "VM_BOOT_FAILED",
        `Could not prepare ${path} for the VM (${err.code ?? err.message}); it must be a regular file or directory, not a symlink.`,
        { cause: err },
      );
    },
  );
  try {
    const st = await handle.stat();
    if (!st.isFile() && !st.isDirectory()) {
      throw new MsbError("VM_BOOT_FAILED", `${path} is neither a regular file nor a directory.`);
    }
    const mode = MODES[access][st.isDirectory() ? "dir" : "file"];
    if (access === "own") {
      await handle.chown(creds.uid, creds.gid);
    } else {
      // Owned by the vmm-agent again: a file a VM's uid wrote (a template's RAM while it was
      // built) must not stay writable by whoever gets that uid next.
      const group = access === "private" ? (process.getgid?.() ?? st.gid) : gids.shared;
      await handle.chown(process.getuid?.() ?? st.uid, group);
    }
    await handle.chmod(mode);
  } finally {
    await handle.close();
  }
}

/** Allocates and releases VM identities for one vmm-agent. */
export interface VmIdentities {
  readonly gids: VmGids;
  /** True when QEMUs run unprivileged (the vmm-agent is root). */
  readonly privileged: boolean;
  /** One line for host info: who QEMU runs as. */
  readonly qemuUser: string;
  /**
   * Decides who the VM's QEMU runs as (see `decideQemuUser`), grants it its volumes, and
   * makes `dir` (and its `ownFiles`, e.g. the scratch disk) its own. CAPACITY_EXHAUSTED when
   * the uid range is used up.
   */
  assign(
    vmId: string,
    request: {
      readonly network: VmNetworkPolicy;
      readonly dir: string;
      readonly ownFiles: readonly string[];
      /** Held open by the caller; from here on owned by the identity (closed by `release`). */
      readonly volumes: readonly HeldVolume[];
    },
  ): Promise<VmIdentity>;
  /** Makes a file usable by a VM (see `prepareFileForVm`) and its directories searchable. */
  prepareFile(path: string, identity: VmIdentity, access: FileAccess): Promise<void>;
  /**
   * Hands a VM's identity (uid, grants and their record) over to another id, for a pooled VM
   * that becomes a sandbox while its QEMU runs on: `release(newVmId)` then undoes it. False
   * when `oldVmId` holds nothing (a QEMU running as the server's user). Any identity `newVmId`
   * held is released first.
   */
  rename(oldVmId: string, newVmId: string): Promise<boolean>;
  /** Removes the VM's volume grants and frees its uid; call once its QEMU has exited. */
  release(vmId: string): Promise<void>;
  /** Undoes the grants an earlier vmm-agent recorded and did not undo; returns their dirs. */
  reapGrants(): Promise<string[]>;
}

export function createVmIdentities(options: VmIdentityOptions): VmIdentities {
  const gids = vmGids(options.gidBase);
  const uids = new Map<string, number>();
  const grants = new Map<string, Grant[]>();
  /** Directories each VM's uid was given search on (`grantSearchFor`), until `release`. */
  const searches = new Map<string, string[]>();
  let homeSecured: Promise<void> | undefined;
  /** Volume descriptors each VM holds until `release`. */
  const volumes = new Map<string, readonly HeldVolume[]>();
  const recordPath = (vmId: string): string | undefined =>
    options.grantsDir === undefined
      ? undefined
      : join(options.grantsDir, `${vmId.replaceAll("/", "~")}.json`);
  async function record(vmId: string, uid: number, made: readonly Grant[]): Promise<void> {
    const path = recordPath(vmId);
    if (path === undefined) return;
    await mkdir(options.grantsDir!, { recursive: true, mode: 0o700 });
    const tmp = `${path}.tmp-${randomBytes(4).toString("hex")}`;
    await writeFile(tmp, JSON.stringify({ uid, grants: made }), { mode: 0o600, flag: "wx" });
    await rename(tmp, path);
  }
  const searchable = new Set<string>();

  /** What `uid` still owns under the VM roots goes to root. */
  async function reclaim(uid: number): Promise<void> {
    for (const dir of options.vmRoots ?? []) await reclaimTree(dir, uid);
  }

  /**
   * Takes the lowest free uid (synchronously, so two creates never get the same one), then
   * checks that it owns nothing any more: an earlier vmm-agent may have died before its
   * release.
   */
  async function allocate(vmId: string): Promise<number> {
    const used = new Set(uids.values());
    for (let i = 0; i < options.uidCount; i++) {
      const uid = options.uidBase + i;
      if (!used.has(uid)) {
        uids.set(vmId, uid);
        await reclaim(uid);
        return uid;
      }
    }
    throw new MsbError(
      "CAPACITY_EXHAUSTED",
      `All ${options.uidCount} VM uids (MSB_VM_UID_BASE, MSB_VM_UID_COUNT) are in use. Stop a sandbox or widen the range.`,
    );
  }

  const identities: VmIdentities = {
    gids,
    privileged: options.privileged,
    qemuUser: options.privileged
      ? `dedicated uid per VM (${options.uidBase}-${options.uidBase + options.uidCount - 1}), or the owner of its volumes`
      : "qemu runs as the server's user",

    async assign(vmId, request) {
      await identities.release(vmId);
      volumes.set(vmId, request.volumes);
      const decision = decideQemuUser({
        privileged: options.privileged,
        volumeOwnerUids: request.volumes.map((v) => v.owner.uid),
        uidBase: options.uidBase,
        uidCount: options.uidCount,
      });
      if (decision.kind === "server") return { vmId, kind: "server" };
      const gid = request.network === "any" ? gids.anyNet : gids.publicNet;
      const uid = decision.kind === "volume-owner" ? decision.uid : await allocate(vmId);
      const identity: VmIdentity = {
        vmId,
        kind: decision.kind,
        credentials: { uid, gid, groups: [gids.shared, ...(options.extraGroups ?? [])] },
      };
      try {
        if (options.home !== undefined) {
          homeSecured ??= secureHome(options.home, gids.shared);
          await homeSecured;
        }
        if (decision.kind === "dedicated") {
          const made: Grant[] = [];
          grants.set(vmId, made);
          for (const vol of request.volumes) {
            made.push({ dir: vol.realPath, owner: vol.owner, dev: vol.dev, ino: vol.ino });
            // Recorded before it is made: a crash in between leaves a record, never a grant.
            await record(vmId, uid, made);
            // On the held inode (its /proc fd link), after checking it is still the one
            // that passed the policy: the path may name something else by now.
            await vol.verify();
            await setfacl(["-m", `u:${uid}:${vol.readOnly ? "r-x" : "rwx"}`, vol.procPath]);
          }
        }
        await identities.prepareFile(request.dir, identity, "own");
        for (const file of request.ownFiles) await prepareFileForVm(file, identity, "own", gids);
      } catch (err) {
        await identities.release(vmId);
        throw err;
      }
      return identity;
    },

    async prepareFile(path, identity, access) {
      const creds = identity.credentials;
      if (creds === undefined) return;
      if (access === "own") {
        const granted = await grantSearchFor(creds.uid, path);
        searches.set(identity.vmId, [...(searches.get(identity.vmId) ?? []), ...granted]);
      } else if (access !== "private") {
        // Shared artifacts (a template's RAM, outside MSB_HOME) are for every VM by design.
        await grantSearch(path, gids.shared, searchable);
      }
      await prepareFileForVm(path, identity, access, gids);
    },

    async rename(oldVmId, newVmId) {
      if (oldVmId === newVmId) return uids.has(oldVmId);
      await identities.release(newVmId);
      const uid = uids.get(oldVmId);
      if (uid === undefined) return false;
      const made = grants.get(oldVmId) ?? [];
      uids.set(newVmId, uid);
      grants.set(newVmId, made);
      volumes.set(newVmId, volumes.get(oldVmId) ?? []);
      volumes.delete(oldVmId);
      searches.set(newVmId, searches.get(oldVmId) ?? []);
      searches.delete(oldVmId);
      // The new record exists before the old one goes: a crash in between leaves two records
      // of the same grants, and undoing a grant twice is harmless.
      if (made.length > 0) await record(newVmId, uid, made);
      const oldPath = recordPath(oldVmId);
      if (oldPath !== undefined) await rm(oldPath, { force: true });
      uids.delete(oldVmId);
      grants.delete(oldVmId);
      return true;
    },

    async release(vmId) {
      const uid = uids.get(vmId);
      const held = volumes.get(vmId) ?? [];
      if (uid !== undefined) {
        await undoHeldGrants(uid, grants.get(vmId) ?? [], held);
        await revokeSearch(uid, searches.get(vmId) ?? []);
        await reclaim(uid);
      }
      searches.delete(vmId);
      const path = recordPath(vmId);
      if (path !== undefined) await rm(path, { force: true });
      await Promise.all(held.map((h) => h.close()));
      volumes.delete(vmId);
      grants.delete(vmId);
      uids.delete(vmId);
    },

    async reapGrants() {
      if (options.grantsDir === undefined) return [];
      const names = await readdir(options.grantsDir).catch(() => []);
      const undone: string[] = [];
      for (const name of names) {
        const path = join(options.grantsDir, name);
        if (name.endsWith(".json")) {
          const parsed = await readFile(path, "utf8")
            .then((text) => JSON.parse(text) as { uid: number; grants: Grant[] })
            .catch(() => undefined);
          if (parsed !== undefined)
            undone.push(...(await undoRecordedGrants(parsed.uid, parsed.grants)));
        }
        await rm(path, { force: true });
      }
      return undone;
    },
  };
  return identities;
}
