import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import type { Logger } from "@msb/runtime";
import type { Admission, Reservation } from "../admission.js";
import { templateKey, type TemplateInputs } from "./template-key.js";

/**
 * Where a template's files are. The one place that names them, so that permissions (QEMU
 * as another uid, a seccomp/AppArmor profile) can be set on these two directories.
 */
export interface TemplatePaths {
  /** `$MSB_HOME/templates/<key>/`: state file, scratch disk, the builder VM's files. */
  readonly dir: string;
  /** Guest RAM of the snapshot; on a tmpfs (`MSB_TEMPLATE_MEMORY_DIR`, default /dev/shm). */
  readonly memoryPath: string;
  /** Device state (QEMU migration stream without RAM). */
  readonly statePath: string;
  /** The scratch disk as of the snapshot; every clone starts from a copy. */
  readonly scratchPath: string;
  /** The builder VM's own directory (sockets, console log, pidfile). */
  readonly vmDir: string;
}

export function templatePaths(templatesDir: string, memoryDir: string, key: string): TemplatePaths {
  const dir = join(templatesDir, key);
  return {
    dir,
    memoryPath: join(memoryDir, `${key}.mem`),
    statePath: join(dir, "state.bin"),
    scratchPath: join(dir, "scratch.ext4"),
    vmDir: join(dir, "vm"),
  };
}

/** The directory of one pooled clone of a template (renamed to its sandbox's at claim). */
export function poolVmDir(paths: TemplatePaths, id: string): string {
  return join(paths.dir, "pool", id);
}

export type TemplateState = "building" | "ready" | "failed";

/** What a build leaves behind besides the files. */
export interface BuiltTemplate {
  /** "python" when the snapshot holds a warm Python REPL, else "". */
  readonly warmLanguage: "python" | "";
  /** The agent stream of that REPL (listed in the clone's HELLO). */
  readonly replStream: number | undefined;
}

export interface Template extends BuiltTemplate {
  readonly key: string;
  readonly inputs: TemplateInputs;
  readonly paths: TemplatePaths;
  readonly state: TemplateState;
  readonly reason: string;
  /** Boot + warm-up + snapshot, in ms (0 until ready). */
  readonly buildMs: number;
}

/** Builds one template's files (boot a pristine VM, warm it, snapshot it). */
export type TemplateBuilder = (
  template: { key: string; inputs: TemplateInputs; paths: TemplatePaths },
  signal: AbortSignal,
) => Promise<BuiltTemplate>;

export interface TemplateManagerOptions {
  readonly templatesDir: string;
  readonly memoryDir: string;
  /** A failed template is tried again after this long (a busy host can time a build out). */
  readonly retryFailedAfterMs: number;
  readonly now?: () => number;
  /** RAM all templates may hold (MSB_TEMPLATE_MEMORY_MAX_MIB); least recently used go first. */
  readonly maxMemoryMib: number;
  /**
   * RAM the templates first asked for by one namespace may hold
   * (MSB_TEMPLATE_MEMORY_NAMESPACE_MAX_MIB): one tenant cannot evict everyone else's.
   */
  readonly maxNamespaceMemoryMib: number;
}

/**
 * The templates of this host, keyed by `templateKey`. Built lazily and one at a time in the
 * background: the first create of a combination is a cold boot and asks for a template
 * (`ensure`); later creates find it `ready`. A template holds only pristine state (it never
 * is a user's VM), so every namespace may share it.
 */
export interface TemplateManager {
  /** Deletes what an earlier process left: templates are rebuilt lazily, never trusted. */
  init(): Promise<void>;
  /** The ready template for `inputs`, if there is one. */
  ready(inputs: TemplateInputs): Template | undefined;
  /**
   * Starts building the template for `inputs` unless it exists or is being built, on behalf
   * of `namespace` (whose share of template RAM it counts against). Least recently used
   * templates are evicted to stay within the caps; none is built when that cannot be done or
   * admission has no memory left for it (creates then cold-boot).
   */
  ensure(inputs: TemplateInputs, namespace: string): void;
  /** Evicts the least recently used ready template (a VM needs its memory); false if none. */
  evictOne(): boolean;
  /** Template RAM held (building and ready) and the cap, for host info. */
  memory(): { usedMib: number; maxMib: number };
  /** Calls `listener` with the key of each template evicted (the pool drops its clones). */
  onEvicted(listener: (key: string) => void): void;
  /** A restore from this template failed: drop it (files too) so that it is rebuilt. */
  discard(key: string, reason: string): void;
  list(): Template[];
  /** Calls `listener` each time a template becomes ready (the pool fills it). */
  onReady(listener: (template: Template) => void): void;
  /** Resolves once no build is running or queued. */
  idle(): Promise<void>;
  /** Aborts builds, waits for them, deletes every template's files. */
  close(): Promise<void>;
}

interface Entry {
  key: string;
  inputs: TemplateInputs;
  paths: TemplatePaths;
  state: TemplateState;
  reason: string;
  buildMs: number;
  warmLanguage: "python" | "";
  replStream: number | undefined;
  failedAtMs: number;
  namespace: string;
  lastUsedMs: number;
  /** Its RAM in admission's memory budget while building or ready. */
  reservation?: Reservation;
}

export function createTemplateManager(
  deps: { builder: TemplateBuilder; logger: Logger; admission: Admission },
  options: TemplateManagerOptions,
): TemplateManager {
  const { builder, logger } = deps;
  const now = options.now ?? Date.now;
  const entries = new Map<string, Entry>();
  const abort = new AbortController();
  // One build at a time: they compete with user VMs for the same cores.
  let chain: Promise<void> = Promise.resolve();
  let closed = false;
  const readyListeners: Array<(template: Template) => void> = [];
  const evictedListeners: Array<(key: string) => void> = [];

  /** Entries holding RAM (a failed one holds none). */
  const holding = (): Entry[] => [...entries.values()].filter((e) => e.state !== "failed");
  const sum = (list: Entry[]): number => list.reduce((n, e) => n + e.inputs.memoryMib, 0);

  function freeMemory(e: Entry): void {
    e.reservation?.release();
    e.reservation = undefined;
  }

  function evict(e: Entry, why: string): void {
    entries.delete(e.key);
    freeMemory(e);
    logger.info({ template: e.key, namespace: e.namespace, why }, "template evicted");
    // On the build chain, so the files are gone before the next build starts (and `idle`).
    chain = chain.then(() => removeFiles(e.paths).catch(() => undefined));
    for (const listener of evictedListeners) listener(e.key);
  }

  /**
   * Evicts ready templates, least recently used first, until `fits` holds; only among
   * `scope`. False when building ones alone already break it.
   */
  function makeRoom(scope: (e: Entry) => boolean, fits: () => boolean, why: string): boolean {
    while (!fits()) {
      const victim = holding()
        .filter((e) => scope(e) && e.state === "ready")
        .sort((a, b) => a.lastUsedMs - b.lastUsedMs)[0];
      if (victim === undefined) return false;
      evict(victim, why);
    }
    return true;
  }

  const view = (e: Entry): Template => ({
    key: e.key,
    inputs: e.inputs,
    paths: e.paths,
    state: e.state,
    reason: e.reason,
    buildMs: e.buildMs,
    warmLanguage: e.warmLanguage,
    replStream: e.replStream,
  });

  async function removeFiles(paths: TemplatePaths): Promise<void> {
    await rm(paths.dir, { recursive: true, force: true });
    await rm(paths.memoryPath, { force: true });
  }

  async function build(e: Entry): Promise<void> {
    if (closed) return;
    const t0 = now();
    try {
      await removeFiles(e.paths);
      await mkdir(e.paths.vmDir, { recursive: true, mode: 0o700 });
      await mkdir(options.memoryDir, { recursive: true, mode: 0o700 });
      const built = await builder({ key: e.key, inputs: e.inputs, paths: e.paths }, abort.signal);
      if (entries.get(e.key) !== e) return;
      e.warmLanguage = built.warmLanguage;
      e.replStream = built.replStream;
      e.buildMs = now() - t0;
      e.state = "ready";
      logger.info(
        {
          template: e.key,
          buildMs: e.buildMs,
          warm: e.warmLanguage,
          image: e.inputs.imageReference,
        },
        "template ready",
      );
      for (const listener of readyListeners) listener(view(e));
    } catch (err) {
      await removeFiles(e.paths).catch(() => undefined);
      freeMemory(e);
      e.state = "failed";
      e.reason = err instanceof Error ? err.message : String(err);
      e.failedAtMs = now();
      logger.warn({ template: e.key, err }, "template build failed");
    }
  }

  return {
    async init() {
      await mkdir(options.templatesDir, { recursive: true, mode: 0o700 });
      for (const name of await readdir(options.templatesDir)) {
        await rm(join(options.templatesDir, name), { recursive: true, force: true });
      }
      await rm(options.memoryDir, { recursive: true, force: true });
    },

    ready(inputs) {
      const e = entries.get(templateKey(inputs));
      if (e?.state !== "ready") return undefined;
      e.lastUsedMs = now();
      return view(e);
    },

    ensure(inputs, namespace) {
      if (closed) return;
      const key = templateKey(inputs);
      const old = entries.get(key);
      if (old !== undefined) {
        if (old.state !== "failed" || now() - old.failedAtMs < options.retryFailedAfterMs) return;
        entries.delete(key);
      }
      const mib = inputs.memoryMib;
      const skip = (why: string): void =>
        logger.info({ template: key, namespace, memoryMib: mib, why }, "template not built");
      if (mib > options.maxMemoryMib || mib > options.maxNamespaceMemoryMib) {
        return skip("larger than the template memory cap");
      }
      const mine = (e: Entry): boolean => e.namespace === namespace;
      if (
        !makeRoom(
          mine,
          () => sum(holding().filter(mine)) + mib <= options.maxNamespaceMemoryMib,
          "namespace template memory cap",
        ) ||
        !makeRoom(
          () => true,
          () => sum(holding()) + mib <= options.maxMemoryMib,
          "template memory cap",
        )
      ) {
        return skip("the templates being built fill the cap");
      }
      let reservation: Reservation;
      try {
        reservation = deps.admission.reserveMemory(mib);
      } catch {
        return skip("no memory left for it in admission");
      }
      const e: Entry = {
        key,
        inputs,
        paths: templatePaths(options.templatesDir, options.memoryDir, key),
        state: "building",
        reason: "",
        buildMs: 0,
        warmLanguage: "",
        replStream: undefined,
        failedAtMs: 0,
        namespace,
        lastUsedMs: now(),
        reservation,
      };
      entries.set(key, e);
      chain = chain.then(() => build(e));
    },

    discard(key, reason) {
      const e = entries.get(key);
      if (e === undefined || e.state !== "ready") return;
      e.state = "failed";
      e.reason = reason;
      e.failedAtMs = now();
      freeMemory(e);
      logger.warn({ template: key, reason }, "template discarded");
      // Clones map the RAM file privately and copied the disk: deleting is safe.
      void removeFiles(e.paths).catch(() => undefined);
    },

    list() {
      return [...entries.values()].map(view);
    },

    onReady(listener) {
      readyListeners.push(listener);
    },

    evictOne() {
      const victim = holding()
        .filter((e) => e.state === "ready")
        .sort((a, b) => a.lastUsedMs - b.lastUsedMs)[0];
      if (victim === undefined) return false;
      evict(victim, "a VM needs the memory");
      return true;
    },

    memory() {
      return { usedMib: sum(holding()), maxMib: options.maxMemoryMib };
    },

    onEvicted(listener) {
      evictedListeners.push(listener);
    },

    async idle() {
      let seen: Promise<void> | undefined;
      while (seen !== chain) {
        seen = chain;
        await chain;
      }
    },

    async close() {
      closed = true;
      abort.abort();
      await chain;
      for (const e of entries.values()) {
        freeMemory(e);
        await removeFiles(e.paths).catch(() => undefined);
      }
      // The memory dir is this home's alone (named after MSB_HOME): leave no empty dir behind.
      await rm(options.memoryDir, { recursive: true, force: true });
    },
  };
}
