import { randomUUID } from "node:crypto";
import { MsbError, type ErrorCode } from "@msb/errors";
import { ALL_NAMESPACES } from "@msb/keys";
import type { Logger } from "@msb/runtime";
import { assertMayAccess, mayAccess, type Caller } from "../auth/caller.js";
import type {
  AttachSession,
  ExecResultEvent,
  ImageBackend,
  OutputStreamName,
  RunCodeResultEvent,
  StartKind,
  VmInfo,
  VmmBackend,
} from "./backends.js";
import { KeyedMutex } from "./keyed-mutex.js";
import { OutputCollector, type OutputLine } from "./output.js";
import type { SandboxPolicy } from "./policy.js";
import { configHash, type SandboxConfig } from "./sandbox-config.js";
import {
  invalidParams,
  type AttachParams,
  type FilesReadParams,
  type FilesWriteParams,
  type MetricsParams,
  type RunCodeParams,
  type RunCommandParams,
  type StartParams,
  type StopParams,
} from "./schemas.js";
import type { SandboxState } from "./state.js";
import type { SandboxRecord, SandboxStore } from "./store.js";

export interface StartResult {
  readonly namespace: string;
  readonly name: string;
  readonly state: "running";
  /** True when the sandbox was already running with this configuration (idempotent start). */
  readonly alreadyRunning: boolean;
  readonly image: string;
  /** How its VM was started (for an idempotent start: how the running VM was); null when the vmm-agent does not say. */
  readonly startKind: StartKind | null;
  /** Spawn or restore to the guest agent's READY, ms; null when not reported. */
  readonly bootMs: number | null;
}

export interface StopResult {
  readonly namespace: string;
  readonly name: string;
  readonly state: "stopped";
  /** True when there was nothing to stop. */
  readonly alreadyStopped: boolean;
  /** True when the sandbox was also deleted (`remove: true`): disk and record are gone. */
  readonly removed: boolean;
}

/** One entry of `sandbox.metrics.get` (SPEC.md shape, plus `state`, `reason`, `image`). */
export interface SandboxMetricsEntry {
  readonly namespace: string;
  readonly name: string;
  readonly running: boolean;
  /** Percent of one vCPU times vcpus. */
  readonly cpu_usage: number;
  /** MiB. */
  readonly memory_usage: number;
  /** Bytes of the writable scratch disk in use. */
  readonly disk_usage: number;
  readonly state: SandboxState;
  readonly reason: string | null;
  readonly image: string;
  /** How the running VM was started ("cold", "template", "pool"); null when stopped or unknown. */
  readonly start_kind: StartKind | null;
  /** Its spawn/restore to READY time in ms; null when stopped or unknown. */
  readonly boot_ms: number | null;
  /** Paused by the vmm-agent because it was idle (it resumes on the next call). */
  readonly paused: boolean;
}

export interface MetricsResult {
  readonly sandboxes: SandboxMetricsEntry[];
}

/** `sandbox.repl.run` result: what the original SDKs read (`status`, `output`) and more. */
export interface RunCodeResult {
  readonly status: "success" | "error" | "timeout";
  readonly language: string;
  readonly output: OutputLine[];
  readonly has_error: boolean;
  /** The exception (status "error") or the timeout (status "timeout"). */
  readonly error?: { readonly type: string; readonly message: string; readonly traceback: string };
  /** Output beyond the cap was dropped (a last stderr line says so too). */
  readonly truncated: boolean;
  /** The REPL had to be restarted: variables from earlier cells are gone. */
  readonly restarted: boolean;
  readonly duration_ms: number;
}

/** `sandbox.command.run` result. */
export interface RunCommandResult {
  readonly command: string;
  readonly args: string[];
  readonly exit_code: number;
  readonly success: boolean;
  readonly output: OutputLine[];
  /** Signal that killed the command, 0 if none. */
  readonly signal: number;
  readonly truncated: boolean;
  readonly duration_ms: number;
}

/**
 * The one place that decides about sandboxes; JSON-RPC and MCP are thin adapters over it.
 * Every method checks the caller's namespace, so adapters never do.
 */
export interface SandboxService {
  /** Boots the sandbox (or finds it running with the same config) and resolves once its guest agent answered. */
  start(caller: Caller, params: StartParams): Promise<StartResult>;
  /**
   * Stops the sandbox's VM; with `remove` also deletes its scratch disk and its record, so
   * later calls get SANDBOX_NOT_FOUND (used by `msb exe` for its temporary sandboxes).
   */
  stop(caller: Caller, params: StopParams): Promise<StopResult>;
  metrics(caller: Caller, params: MetricsParams, signal: AbortSignal): Promise<MetricsResult>;
  /** `signal` aborts the run when the caller goes away; `observer` sees output as it comes. */
  runCode(
    caller: Caller,
    params: RunCodeParams,
    signal: AbortSignal,
    observer?: RunObserver,
  ): Promise<RunCodeResult>;
  runCommand(
    caller: Caller,
    params: RunCommandParams,
    signal: AbortSignal,
    observer?: RunObserver,
  ): Promise<RunCommandResult>;
  /** Writes a guest file (base64 in `data`). */
  writeFile(
    caller: Caller,
    params: FilesWriteParams,
    signal: AbortSignal,
  ): Promise<FileWriteResult>;
  /** Reads a guest file, base64 in the answer. */
  readFile(caller: Caller, params: FilesReadParams, signal: AbortSignal): Promise<FileReadResult>;
  /**
   * Starts an interactive process in a running sandbox (the WebSocket attach route). Checks
   * happen before it returns; aborting `signal` ends the session and kills the process.
   */
  attach(caller: Caller, params: AttachParams, signal: AbortSignal): AttachSession;
  /**
   * Makes the database agree with the vmm-agent after a restart: a sandbox the database
   * thinks is live but the vmm-agent does not run becomes failed ("VM lost while the control
   * plane was down"). Throws SERVICE_UNAVAILABLE when the vmm-agent is down (retry later).
   * With `live` (the periodic pass while serving), only sandboxes that were already running
   * before the vmm-agent was asked are checked — starts and stops in flight are left to
   * their own calls — and a VM that died (QEMU killed, guest panic, vmm-agent restarted) is
   * recorded as failed with the vmm-agent's reason, so the database never keeps saying
   * `running` for a VM that is gone.
   */
  reconcile(signal: AbortSignal, options?: ReconcileOptions): Promise<ReconcileReport>;
}

export interface ReconcileOptions {
  /** A pass while serving (see `reconcile`), not the one after the control plane started. */
  readonly live?: boolean;
}

/** `sandbox.files.write` result. */
export interface FileWriteResult {
  readonly path: string;
  /** Bytes written. */
  readonly size: number;
}

/** `sandbox.files.read` result. */
export interface FileReadResult {
  readonly path: string;
  readonly data: string;
  readonly encoding: "base64";
  /** Bytes in `data` (decoded). */
  readonly size: number;
  /** The file is longer than `max_bytes`. */
  readonly truncated: boolean;
}

/** Watches a run as it happens (streaming answers, docs/streaming.md). */
export interface RunObserver {
  /** The run was accepted (sandbox running, params valid) and is about to start. */
  onStart?(): void;
  /**
   * Output as it arrives: each chunk decoded as UTF-8 per stream (characters split across
   * chunks are kept whole), newlines kept; nothing more once the output cap is reached. The
   * server's own notes come as stderr lines ending in a newline.
   */
  onOutput?(stream: OutputStreamName, text: string): void;
}

export interface ReconcileReport {
  readonly checked: number;
  readonly lost: string[];
  readonly orphans: string[];
}

export interface SandboxServiceDeps {
  readonly store: SandboxStore;
  readonly image: ImageBackend;
  readonly vmm: VmmBackend;
  readonly policy: SandboxPolicy;
  readonly logger: Logger;
}

export interface SandboxServiceOptions {
  /** Output kept per run, in bytes (stdout + stderr). */
  readonly outputLimitBytes: number;
  /** Run timeout when the caller gives none. */
  readonly runDefaultMs: number;
  /** Largest run timeout a caller may ask for. */
  readonly runMaxMs: number;
  /**
   * Aborts starts and stops in flight: the process is shutting down. A start is deliberately
   * not tied to its HTTP request: a client that gives up does not leave a half-booted VM,
   * and its retry finds the sandbox running.
   */
  readonly signal?: AbortSignal;
}

const VM_GONE_CODES: readonly ErrorCode[] = ["SANDBOX_NOT_FOUND", "VM_DIED", "SANDBOX_STOPPED"];
const LOST_CODES: readonly ErrorCode[] = ["SANDBOX_NOT_FOUND", "VM_DIED", "AGENT_DISCONNECTED"];

export function createSandboxService(
  deps: SandboxServiceDeps,
  options: SandboxServiceOptions,
): SandboxService {
  const { store, image, vmm, policy, logger } = deps;
  const mutex = new KeyedMutex();
  const lifecycle = options.signal ?? new AbortController().signal;
  const keyOf = (namespace: string, name: string) => `${namespace}/${name}`;

  const notFound = (namespace: string, name: string) =>
    new MsbError(
      "SANDBOX_NOT_FOUND",
      `No sandbox '${name}' in namespace '${namespace}'. Start it with sandbox.start (and check the name and namespace).`,
      { details: { sandbox: name, namespace } },
    );

  const busy = (record: SandboxRecord) =>
    new MsbError(
      "SANDBOX_BUSY",
      `Sandbox '${record.name}' in namespace '${record.namespace}' is ${record.state}. Retry once that has finished.`,
      { details: { sandbox: record.name, namespace: record.namespace, state: record.state } },
    );

  /** The running sandbox, or the error that says why it cannot take a run now. */
  const requireRunning = (caller: Caller, namespace: string, name: string): SandboxRecord => {
    assertMayAccess(caller, namespace);
    const record = store.get(namespace, name);
    if (record === undefined) throw notFound(namespace, name);
    switch (record.state) {
      case "running":
        return record;
      case "starting":
      case "stopping":
        throw busy(record);
      case "stopped":
      case "failed":
        throw new MsbError(
          "SANDBOX_STOPPED",
          `Sandbox '${name}' in namespace '${namespace}' is not running — sandbox stopped: ${record.reason ?? record.state}. Start it again with sandbox.start.`,
          { details: { sandbox: name, namespace, state: record.state, reason: record.reason } },
        );
    }
  };

  const timeoutMsOf = (seconds: number | undefined): number => {
    if (seconds === undefined) return options.runDefaultMs;
    const ms = Math.ceil(seconds * 1000);
    if (ms > options.runMaxMs) {
      throw invalidParams([
        { field: "timeout", message: `must be at most ${options.runMaxMs / 1000} seconds` },
      ]);
    }
    return ms;
  };

  /**
   * A run found the VM gone: record it, unless the sandbox was stopped or restarted meanwhile
   * (`startedAt` tells runs of one boot apart).
   */
  const markLost = async (record: SandboxRecord, err: MsbError): Promise<void> => {
    await mutex.run(keyOf(record.namespace, record.name), () => {
      const now = store.get(record.namespace, record.name);
      if (now?.state === "running" && now.startedAt === record.startedAt) {
        store.apply(record.namespace, record.name, {
          type: "fail",
          reason: `the VM stopped unexpectedly: ${err.message}`,
          code: err.code,
        });
      }
      return Promise.resolve();
    });
  };

  /** Runs a streamed call; a VM found gone marks the sandbox failed before the error goes out. */
  const guardRun = async <T>(record: SandboxRecord, fn: () => Promise<T>): Promise<T> => {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof MsbError && LOST_CODES.includes(err.code)) {
        await markLost(record, err);
        if (err.code === "SANDBOX_NOT_FOUND") {
          throw new MsbError(
            "SANDBOX_STOPPED",
            `Sandbox '${record.name}' in namespace '${record.namespace}' is not running — sandbox stopped: the vmm-agent no longer runs its VM. Start it again with sandbox.start.`,
            { details: { sandbox: record.name, namespace: record.namespace }, cause: err },
          );
        }
      }
      throw err;
    }
  };

  /** The vmm-agent's view of its VMs by id; empty when it cannot say (metrics stay useful). */
  const vmsById = async (signal: AbortSignal): Promise<ReadonlyMap<string, VmInfo>> => {
    try {
      return new Map((await vmm.listVms(signal)).map((vm) => [vm.vmId, vm]));
    } catch (err) {
      logger.warn({ err }, "could not list VMs for start kinds");
      return new Map();
    }
  };

  const startFacts = (vm: VmInfo | undefined) => ({
    startKind: vm?.startKind ?? null,
    bootMs: vm?.bootMs ?? null,
  });

  const stopQuietly = async (vmId: string): Promise<void> => {
    try {
      await vmm.stopVm(vmId, lifecycle);
    } catch (err) {
      if (!(err instanceof MsbError && VM_GONE_CODES.includes(err.code))) {
        logger.warn({ err, vmId }, "could not stop the VM of a failed start");
      }
    }
  };

  return {
    async start(caller, params) {
      const { namespace, sandbox: name } = params;
      assertMayAccess(caller, namespace);
      const requested = params.config === undefined ? undefined : policy.check(params.config);
      const bootTimeoutMs =
        params.config?.timeout === undefined ? 0 : Math.ceil(params.config.timeout * 1000);

      return mutex.run(keyOf(namespace, name), async () => {
        const existing = store.get(namespace, name);
        if (requested === undefined && existing === undefined) {
          throw invalidParams([
            { field: "config", message: "is required to create a sandbox (at least config.image)" },
          ]);
        }
        // A start without config reuses the stored one, checked again like a new request:
        // its volumes may have been swapped for symlinks, the policy may have changed.
        const config = requested ?? policy.recheck((existing as SandboxRecord).config);
        const hash = configHash(config);
        const result = { namespace, name, state: "running" as const, image: config.image };

        if (existing?.state === "running") {
          if (existing.configHash === hash || requested === undefined) {
            const vm = (await vmsById(lifecycle)).get(existing.vmId);
            return { ...result, alreadyRunning: true, ...startFacts(vm) };
          }
          const fields = differingFields(existing.config, config);
          throw new MsbError(
            "SANDBOX_EXISTS",
            `Sandbox '${name}' in namespace '${namespace}' is already running with a different configuration (${fields.join(", ")} differ). Stop it first, start it with the same configuration, or pick another name.`,
            { details: { sandbox: name, namespace, differs: fields } },
          );
        }
        if (existing?.state === "starting" || existing?.state === "stopping") throw busy(existing);

        const vmId = keyOf(namespace, name);
        // The scratch disk (the sandbox's files) survives stop/start, unless the image changed
        // underneath it.
        const keepDisk = existing !== undefined && existing.config.image === config.image;
        // No await between the quota check and the record of the start: two starts in one
        // namespace cannot both pass.
        policy.checkQuota(name, config, store.list(namespace));
        store.apply(namespace, name, { type: "start" }, { config, configHash: hash, vmId });
        let vmRequested = false;
        try {
          // A namespace-bound key may not pull (image.pull is host-wide): it gets images
          // already present, or from the registries the operator allows for such keys.
          const pullIfMissing =
            caller.scope === ALL_NAMESPACES || policy.namespaceMayPull(config.image);
          const rootfs = await image
            .prepareRootfs(config.image, lifecycle, { pullIfMissing })
            .catch((err: unknown) => {
              if (!pullIfMissing && err instanceof MsbError && err.code === "IMAGE_NOT_FOUND") {
                throw policy.pullDenied(config.image, err);
              }
              throw err;
            });
          vmRequested = true;
          const vm = await vmm.createVm(
            {
              vmId,
              rootfs,
              memoryMib: config.memoryMib,
              cpus: config.cpus,
              env: [...rootfs.env, ...config.envs],
              workdir: config.workdir ?? rootfs.workdir,
              volumes: config.volumes,
              ports: config.ports,
              network: config.network,
              hostname: name,
              bootTimeoutMs,
              keepDisk,
            },
            lifecycle,
          );
          store.apply(namespace, name, { type: "ready" });
          logger.info(
            { namespace, sandbox: name, image: config.image, caller: caller.id },
            "sandbox running",
          );
          return { ...result, alreadyRunning: false, ...startFacts(vm) };
        } catch (err) {
          const known = err instanceof MsbError && err.code !== "INTERNAL";
          store.apply(namespace, name, {
            type: "fail",
            reason: known ? err.message : "internal fault while starting (see the server log)",
            code: known ? err.code : "INTERNAL",
          });
          // A deadline or a cancel may leave a VM booting on the vmm-agent's side.
          if (vmRequested) await stopQuietly(vmId);
          throw err;
        }
      });
    },

    async stop(caller, params) {
      const { namespace, sandbox: name, remove } = params;
      assertMayAccess(caller, namespace);
      return mutex.run(keyOf(namespace, name), async () => {
        const record = store.get(namespace, name);
        if (record === undefined) throw notFound(namespace, name);
        if (record.state === "starting" || record.state === "stopping") throw busy(record);
        const alreadyStopped = record.state === "stopped";
        if (alreadyStopped) {
          // The VM is down already; the vmm-agent still deletes its disk (also when it no
          // longer tracks the VM, e.g. after a restart).
          if (remove) await vmm.stopVm(record.vmId, lifecycle, { removeDisk: true });
        } else {
          store.apply(namespace, name, { type: "stop" });
          try {
            await vmm.stopVm(record.vmId, lifecycle, { removeDisk: remove });
          } catch (err) {
            if (!(err instanceof MsbError && VM_GONE_CODES.includes(err.code))) {
              const known = err instanceof MsbError && err.code !== "INTERNAL";
              store.apply(namespace, name, {
                type: "fail",
                reason: `stopping failed: ${known ? err.message : "internal fault (see the server log)"}`,
                code: known ? err.code : "INTERNAL",
              });
              throw err;
            }
          }
          store.apply(namespace, name, { type: "stopped" });
          logger.info({ namespace, sandbox: name, caller: caller.id }, "sandbox stopped");
        }
        if (remove) {
          // Under the sandbox's lock the row is stopped; the state guard is belt and braces.
          store.remove(namespace, name, ["stopped"]);
          logger.info({ namespace, sandbox: name, caller: caller.id }, "sandbox removed");
        }
        return { namespace, name, state: "stopped" as const, alreadyStopped, removed: remove };
      });
    },

    async metrics(caller, params, signal) {
      let records: SandboxRecord[];
      if (params.namespace === "*") {
        records = store.list().filter((r) => mayAccess(caller, r.namespace));
      } else {
        assertMayAccess(caller, params.namespace);
        records = store.list(params.namespace);
      }
      if (params.sandbox !== undefined) {
        records = records.filter((r) => r.name === params.sandbox);
        if (records.length === 0) {
          throw notFound(params.namespace === "*" ? "*" : params.namespace, params.sandbox);
        }
      }
      const vms = records.some((r) => r.state === "running")
        ? await vmsById(signal)
        : new Map<string, VmInfo>();
      const sandboxes = await Promise.all(
        records.map(async (r): Promise<SandboxMetricsEntry> => {
          const base = {
            namespace: r.namespace,
            name: r.name,
            state: r.state,
            reason: r.reason,
            image: r.config.image,
            start_kind: null,
            boot_ms: null,
            paused: false,
          };
          const idle = { ...base, running: false, cpu_usage: 0, memory_usage: 0, disk_usage: 0 };
          if (r.state !== "running") return idle;
          const vm = vms.get(r.vmId);
          const facts = startFacts(vm);
          try {
            const usage = await vmm.vmUsage(r.vmId, signal);
            return {
              ...base,
              start_kind: facts.startKind,
              boot_ms: facts.bootMs,
              paused: vm?.paused ?? false,
              running: usage.running,
              cpu_usage: Math.round(usage.cpuPercent * 100) / 100,
              memory_usage: Math.round(usage.memoryUsedBytes / (1024 * 1024)),
              disk_usage: usage.diskUsedBytes,
            };
          } catch (err) {
            if (err instanceof MsbError && LOST_CODES.includes(err.code)) {
              await markLost(r, err);
              const now = store.get(r.namespace, r.name);
              return { ...idle, state: now?.state ?? r.state, reason: now?.reason ?? null };
            }
            if (err instanceof MsbError && err.code === "SERVICE_UNAVAILABLE") throw err;
            logger.warn({ err, vmId: r.vmId }, "could not read VM metrics");
            return { ...idle, running: true };
          }
        }),
      );
      return { sandboxes };
    },

    async runCode(caller, params, signal, observer) {
      const record = requireRunning(caller, params.namespace, params.sandbox);
      const timeoutMs = timeoutMsOf(params.timeout);
      const language = params.language === "python" ? "python" : "node";
      observer?.onStart?.();
      const collector = new RunSink(options.outputLimitBytes, observer);
      let result: RunCodeResultEvent | undefined;
      await guardRun(record, async () => {
        const events = vmm.runCode(
          { vmId: record.vmId, language, code: params.code, timeoutMs },
          signal,
        );
        for await (const event of events) {
          if (event.type === "output") collector.push(event.stream, event.data);
          else result = event;
        }
      });
      if (result === undefined) throw noResult("RunCode");
      if (result.status === "timeout") {
        collector.note(
          "stderr",
          `msb: the cell did not finish within ${timeoutMs / 1000} s and was interrupted.`,
        );
      }
      if (result.restarted) {
        collector.note(
          "stderr",
          "msb: the REPL had to be restarted; variables and imports from earlier cells are gone.",
        );
      }
      const { output, truncated } = collector.finish(result.truncated);
      const error =
        result.status === "error"
          ? { type: result.errorType, message: result.errorMessage, traceback: result.traceback }
          : result.status === "timeout"
            ? {
                type: "Timeout",
                message: `did not finish within ${timeoutMs / 1000} s`,
                traceback: "",
              }
            : undefined;
      return {
        status: result.status,
        language: params.language,
        output,
        has_error: result.status !== "success",
        ...(error === undefined ? {} : { error }),
        truncated,
        restarted: result.restarted,
        duration_ms: result.durationMs,
      };
    },

    async runCommand(caller, params, signal, observer) {
      const record = requireRunning(caller, params.namespace, params.sandbox);
      const timeoutMs = timeoutMsOf(params.timeout);
      observer?.onStart?.();
      const collector = new RunSink(options.outputLimitBytes, observer);
      let result: ExecResultEvent | undefined;
      await guardRun(record, async () => {
        const events = vmm.exec(
          {
            vmId: record.vmId,
            execId: randomUUID(),
            command: params.command,
            args: params.args,
            timeoutMs,
          },
          signal,
        );
        for await (const event of events) {
          if (event.type === "output") collector.push(event.stream, event.data);
          else result = event;
        }
      });
      if (result === undefined) throw noResult("Exec");
      const { output, truncated } = collector.finish(result.truncated);
      if (result.timedOut) {
        // The original SDKs raise on a command timeout; an error (with the output so far) keeps them working.
        throw new MsbError(
          "TIMEOUT",
          `Command '${params.command}' did not finish within ${timeoutMs / 1000} s and was killed. Retry with a longer timeout.`,
          {
            details: {
              command: params.command,
              args: params.args,
              timeoutSeconds: timeoutMs / 1000,
              output,
              truncated,
            },
          },
        );
      }
      return {
        command: params.command,
        args: params.args,
        exit_code: result.exitCode,
        success: result.exitCode === 0 && result.signal === 0,
        output,
        signal: result.signal,
        truncated,
        duration_ms: result.durationMs,
      };
    },

    async writeFile(caller, params, signal) {
      const record = requireRunning(caller, params.namespace, params.sandbox);
      const data = Buffer.from(params.data, "base64");
      await guardRun(record, () =>
        vmm.writeFile(
          record.vmId,
          params.path,
          data,
          { mode: params.mode, createParents: params.create_parents },
          signal,
        ),
      );
      return { path: params.path, size: data.length };
    },

    async readFile(caller, params, signal) {
      const record = requireRunning(caller, params.namespace, params.sandbox);
      const file = await guardRun(record, () =>
        vmm.readFile(record.vmId, params.path, params.max_bytes, signal),
      );
      return {
        path: params.path,
        data: Buffer.from(file.data).toString("base64"),
        encoding: "base64",
        size: file.data.length,
        truncated: file.truncated,
      };
    },

    attach(caller, params, signal) {
      const record = requireRunning(caller, params.namespace, params.sandbox);
      const session = vmm.attach(
        {
          vmId: record.vmId,
          command: params.command,
          args: params.args,
          env: params.env,
          workdir: params.workdir,
          pty: params.pty,
        },
        signal,
      );
      return {
        send: (input) => session.send(input),
        events: (async function* () {
          const events = session.events[Symbol.asyncIterator]();
          for (;;) {
            const next = await guardRun(record, () => events.next());
            if (next.done === true) return;
            yield next.value;
          }
        })(),
      };
    },

    async reconcile(signal, reconcileOptions) {
      const live = reconcileOptions?.live === true;
      const listedAt = Date.now();
      const vms = await vmm.listVms(signal);
      const byId = new Map<string, VmInfo>(vms.map((vm) => [vm.vmId, vm]));
      const lost: string[] = [];
      let checked = 0;
      const known = new Set<string>();
      for (const snapshot of store.list()) {
        known.add(snapshot.vmId);
        if (snapshot.state === "stopped" || snapshot.state === "failed") continue;
        if (live && snapshot.state !== "running") continue;
        checked += 1;
        await mutex.run(keyOf(snapshot.namespace, snapshot.name), async () => {
          const r = store.get(snapshot.namespace, snapshot.name);
          if (r === undefined) return;
          // Changed since the vmm-agent answered (a stop and a new start): the answer is stale.
          if (live && (r.state !== "running" || r.updatedAt > listedAt)) return;
          const vm = byId.get(r.vmId);
          const alive = vm?.status === "running";
          const why =
            vm === undefined
              ? ""
              : ` (vmm-agent: ${vm.status}${vm.reason ? `, ${vm.reason}` : ""})`;
          if (r.state === "running" && !alive) {
            const reason = !live
              ? `VM lost while the control plane was down${why}`
              : vm === undefined
                ? "the VM is gone: the vmm-agent no longer runs it (the vmm-agent was restarted, and its VMs stop with it)"
                : `the VM stopped unexpectedly: ${vm.reason || vm.status}`;
            store.apply(r.namespace, r.name, { type: "fail", reason, code: "VM_DIED" });
            lost.push(r.vmId);
          } else if (r.state === "starting") {
            if (alive) {
              store.apply(r.namespace, r.name, { type: "ready" });
            } else {
              store.apply(r.namespace, r.name, {
                type: "fail",
                reason: `VM lost while the control plane was down; it was still starting${why}`,
                code: "VM_DIED",
              });
              if (vm !== undefined) await stopQuietly(r.vmId);
              lost.push(r.vmId);
            }
          } else if (r.state === "stopping") {
            if (vm !== undefined && vm.status !== "stopped") await stopQuietly(r.vmId);
            store.apply(r.namespace, r.name, { type: "stopped" });
          }
        });
      }
      const orphans = vms
        .filter((vm) => !known.has(vm.vmId) && vm.status === "running")
        .map((vm) => vm.vmId);
      // The periodic pass reports orphans to its caller, which logs them when they change.
      if (orphans.length > 0 && !live) {
        logger.warn({ orphans }, "the vmm-agent runs VMs the control plane has no record of");
      }
      if (lost.length > 0) logger.warn({ lost }, "sandboxes whose VM was lost marked failed");
      return { checked, lost, orphans };
    },
  };
}

/**
 * Collects a run's output into lines (the result) and, when observed, passes the raw chunks
 * on as they arrive (streaming answers), both under the same cap. Notes of the server's own
 * (timeout, restart, truncation) go to both.
 */
class RunSink {
  readonly #collector: OutputCollector;
  readonly #limitBytes: number;
  readonly #observer: RunObserver | undefined;
  readonly #decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };

  constructor(limitBytes: number, observer: RunObserver | undefined) {
    this.#collector = new OutputCollector(limitBytes);
    this.#limitBytes = limitBytes;
    this.#observer = observer;
  }

  push(stream: OutputStreamName, data: Uint8Array): void {
    if (this.#observer?.onOutput !== undefined && !this.#collector.truncated) {
      const text = this.#decoders[stream].decode(data, { stream: true });
      if (text !== "") this.#observer.onOutput(stream, text);
    }
    this.#collector.push(stream, data);
  }

  note(stream: OutputStreamName, text: string): void {
    this.#observer?.onOutput?.(stream, `${text}\n`);
    this.#collector.note(stream, text);
  }

  finish(truncatedUpstream: boolean): { output: OutputLine[]; truncated: boolean } {
    const truncated = this.#collector.truncated || truncatedUpstream;
    if (truncated) {
      this.note(
        "stderr",
        `msb: output truncated: only the first ${this.#limitBytes} bytes were kept.`,
      );
    }
    return { output: this.#collector.finish().output, truncated };
  }
}

function noResult(call: string): MsbError {
  return new MsbError(
    "AGENT_PROTOCOL_ERROR",
    `The vmm-agent ended ${call} without a result. Retry; if it persists, stop and start the sandbox.`,
  );
}

const CONFIG_FIELDS: readonly [keyof SandboxConfig, string][] = [
  ["image", "image"],
  ["memoryMib", "memory"],
  ["cpus", "cpus"],
  ["envs", "envs"],
  ["workdir", "workdir"],
  ["volumes", "volumes"],
  ["ports", "ports"],
  ["network", "network"],
  ["scripts", "scripts"],
  ["exec", "exec"],
];

function differingFields(a: SandboxConfig, b: SandboxConfig): string[] {
  return CONFIG_FIELDS.filter(([key]) => JSON.stringify(a[key]) !== JSON.stringify(b[key])).map(
    ([, wire]) => wire,
  );
}
