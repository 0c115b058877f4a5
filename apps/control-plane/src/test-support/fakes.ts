import { MsbError } from "@msb/errors";
import type {
  AttachEvent,
  AttachInput,
  AttachSession,
  AttachSpec,
  CreateVmSpec,
  ExecRequest,
  ExecResultEvent,
  HostInfo,
  ImageBackend,
  OutputEvent,
  PrepareRootfsOptions,
  PreparedRootfs,
  RunCodeRequest,
  RunCodeResultEvent,
  StopVmOptions,
  VmInfo,
  VmmBackend,
} from "../sandboxes/backends.js";

/**
 * In-memory backends for tests of the control plane: a seam the control plane owns
 * (`ImageBackend`, `VmmBackend`), never a stand-in for QEMU in e2e tests.
 */

const down = (service: string) =>
  new MsbError("SERVICE_UNAVAILABLE", `The ${service} is not reachable; retry in a few seconds.`, {
    details: { service },
  });

export class FakeImageBackend implements ImageBackend {
  down = false;
  /** Thrown by prepareRootfs when set (e.g. IMAGE_NOT_FOUND). */
  failWith: Error | undefined;
  readonly prepared: string[] = [];
  /** Images not in the store: prepareRootfs pulls them (and records it) only when allowed to. */
  readonly missing = new Set<string>();
  /** References pulled because they were missing. */
  readonly pulled: string[] = [];

  prepareRootfs(
    reference: string,
    _signal?: AbortSignal,
    options?: PrepareRootfsOptions,
  ): Promise<PreparedRootfs> {
    if (this.down) return Promise.reject(down("image service"));
    if (this.failWith !== undefined) return Promise.reject(this.failWith);
    if (this.missing.has(reference)) {
      if (options?.pullIfMissing === false) {
        return Promise.reject(
          new MsbError("IMAGE_NOT_FOUND", `No image ${reference} in the local store.`, {
            details: { reference },
          }),
        );
      }
      this.missing.delete(reference);
      this.pulled.push(reference);
    }
    this.prepared.push(reference);
    return Promise.resolve({
      path: `/fake/rootfs/${reference.replace(/[^A-Za-z0-9]/g, "_")}.erofs`,
      imageReference: `docker.io/${reference}:latest`,
      manifestDigest: "sha256:" + "0".repeat(64),
      env: ["PATH=/usr/bin:/bin", "IMAGE_ENV=1"],
      workdir: "/",
    });
  }

  ping(): Promise<void> {
    return this.down ? Promise.reject(down("image service")) : Promise.resolve();
  }
}

type RunScript = (request: RunCodeRequest) => (OutputEvent | RunCodeResultEvent)[];
type ExecScript = (request: ExecRequest) => (OutputEvent | ExecResultEvent)[];

export const out = (stream: "stdout" | "stderr", text: string): OutputEvent => ({
  type: "output",
  stream,
  data: Buffer.from(text),
});

export const codeResult = (
  status: RunCodeResultEvent["status"],
  extra: Partial<RunCodeResultEvent> = {},
): RunCodeResultEvent => ({
  type: "result",
  status,
  errorType: "",
  errorMessage: "",
  traceback: "",
  truncated: false,
  restarted: false,
  durationMs: 5,
  ...extra,
});

export const execResult = (
  exitCode: number,
  extra: Partial<ExecResultEvent> = {},
): ExecResultEvent => ({
  type: "result",
  exitCode,
  signal: 0,
  timedOut: false,
  truncated: false,
  durationMs: 5,
  ...extra,
});

/** What a vmm-agent reports about how a VM was started. */
export type VmStartFacts = Pick<VmInfo, "startKind" | "bootMs" | "paused">;

/** A vmm-agent that "boots" instantly; scripts decide what runs print. */
export class FakeVmmBackend implements VmmBackend {
  down = false;
  readonly vms = new Map<
    string,
    { spec: CreateVmSpec; status: VmInfo["status"]; start?: VmStartFacts; reason?: string }
  >();
  /** How the next VMs "start" (start kind, boot ms, paused), as a vmm-agent reports it. */
  nextStart: VmStartFacts | undefined;
  /** Merged into hostInfo (templates, start counters, paused VMs). */
  hostExtras: Partial<HostInfo> = {};
  readonly created: CreateVmSpec[] = [];
  readonly stopped: string[] = [];
  /** VM ids whose scratch disk a stop was asked to delete. */
  readonly removedDisks: string[] = [];
  /** Thrown by createVm when set (e.g. VM_BOOT_FAILED). */
  failCreateWith: Error | undefined;
  /** When set, createVm waits for this promise (to hold a boot in flight). */
  bootGate: Promise<void> | undefined;
  /** Thrown by runCode/exec when set (e.g. VM_DIED). */
  failRunWith: Error | undefined;
  runScript: RunScript = (req) => [
    out("stdout", `ran ${req.language}: ${req.code}\n`),
    codeResult("success"),
  ];
  execScript: ExecScript = (req) => [
    out("stdout", `${[req.command, ...req.args].join(" ")}\n`),
    execResult(0),
  ];
  readonly runs: RunCodeRequest[] = [];

  hostInfo() {
    if (this.down) return Promise.reject(down("vmm agent"));
    return Promise.resolve({
      accelerator: "tcg",
      hypervisor: "qemu",
      version: "fake",
      note: "",
      isolation: {
        seccomp: true,
        qemuUser: "qemu runs as the server's user",
        networkPolicyEnforced: false,
        networkPolicyNote: "not enforced: the vmm-agent does not run as root",
      },
      ...this.hostExtras,
    });
  }

  async createVm(spec: CreateVmSpec): Promise<VmInfo> {
    if (this.down) throw down("vmm agent");
    this.created.push(spec);
    if (this.bootGate !== undefined) await this.bootGate;
    if (this.failCreateWith !== undefined) throw this.failCreateWith;
    const start = this.nextStart;
    this.vms.set(spec.vmId, { spec, status: "running", ...(start === undefined ? {} : { start }) });
    return { vmId: spec.vmId, status: "running", reason: "", accelerator: "tcg", ...start };
  }

  stopVm(vmId: string, _signal?: AbortSignal, options?: StopVmOptions): Promise<void> {
    if (this.down) return Promise.reject(down("vmm agent"));
    this.stopped.push(vmId);
    const known = this.vms.delete(vmId);
    // Like the vmm-agent: removing the disk of a VM it no longer tracks is not an error.
    if (options?.removeDisk === true) {
      this.removedDisks.push(vmId);
      return Promise.resolve();
    }
    if (!known) {
      return Promise.reject(new MsbError("SANDBOX_NOT_FOUND", `No VM ${vmId}.`));
    }
    return Promise.resolve();
  }

  listVms(): Promise<VmInfo[]> {
    if (this.down) return Promise.reject(down("vmm agent"));
    return Promise.resolve(
      [...this.vms].map(([vmId, vm]) => ({
        vmId,
        status: vm.status,
        reason: vm.reason ?? "",
        accelerator: "tcg",
        ...vm.start,
      })),
    );
  }

  vmUsage(vmId: string) {
    if (this.down) return Promise.reject(down("vmm agent"));
    if (!this.vms.has(vmId))
      return Promise.reject(new MsbError("SANDBOX_NOT_FOUND", `No VM ${vmId}.`));
    return Promise.resolve({
      running: true,
      cpuPercent: 12.345,
      memoryUsedBytes: 100 * 1024 * 1024,
      diskUsedBytes: 4096,
    });
  }

  /** When set, runCode waits for this promise before its output (a run in flight). */
  runGate: Promise<void> | undefined;

  async *runCode(request: RunCodeRequest): AsyncIterable<OutputEvent | RunCodeResultEvent> {
    if (this.down) throw down("vmm agent");
    this.runs.push(request);
    if (this.failRunWith !== undefined) throw this.failRunWith;
    if (!this.vms.has(request.vmId))
      throw new MsbError("SANDBOX_NOT_FOUND", `No VM ${request.vmId}.`);
    await (this.runGate ?? Promise.resolve());
    yield* this.runScript(request);
  }

  readonly files = new Map<string, Uint8Array>();

  readFile(vmId: string, path: string, maxBytes: number) {
    const data = this.files.get(`${vmId}:${path}`);
    if (data === undefined) {
      return Promise.reject(new MsbError("FILE_NOT_FOUND", `No file ${path} in the guest.`));
    }
    return Promise.resolve({ data: data.subarray(0, maxBytes), truncated: data.length > maxBytes });
  }

  writeFile(vmId: string, path: string, data: Uint8Array) {
    if (!this.vms.has(vmId))
      return Promise.reject(new MsbError("SANDBOX_NOT_FOUND", `No VM ${vmId}.`));
    this.files.set(`${vmId}:${path}`, data);
    return Promise.resolve();
  }

  readonly attaches: AttachSpec[] = [];

  /**
   * A fake interactive process: says its pty size (or "pipes"), echoes stdin as stdout,
   * reports resizes; `eof` ends it with 0, a signal with 128 + signal. Aborting ends it too.
   */
  attach(spec: AttachSpec, signal: AbortSignal): AttachSession {
    this.attaches.push(spec);
    const events: AttachEvent[] = [];
    let wake: (() => void) | undefined;
    let ended = false;
    const push = (e: AttachEvent): void => {
      if (ended) return;
      events.push(e);
      if (e.type === "exit") ended = true;
      wake?.();
    };
    const fail = this.down
      ? down("vmm agent")
      : this.vms.has(spec.vmId)
        ? undefined
        : new MsbError("SANDBOX_NOT_FOUND", `No VM ${spec.vmId}.`);
    push({ type: "started", pid: 42 });
    push(out("stdout", spec.pty ? `pty ${spec.pty.rows}x${spec.pty.cols}\n` : "pipes\n"));
    const exit = (code: number): void =>
      push({ type: "exit", exitCode: code, signal: 0, durationMs: 1 });
    signal.addEventListener("abort", () => {
      ended = true;
      wake?.();
    });
    return {
      send: (input: AttachInput) => {
        switch (input.type) {
          case "stdin":
            push({ type: "output", stream: "stdout", data: input.data });
            break;
          case "resize":
            push(out("stdout", `resized ${input.rows}x${input.cols}\n`));
            break;
          case "signal":
            exit(128 + input.signal);
            break;
          case "eof":
            exit(0);
            break;
        }
        return Promise.resolve();
      },
      events: (async function* () {
        if (fail !== undefined) throw fail;
        for (;;) {
          const e = events.shift();
          if (e !== undefined) {
            yield e;
            if (e.type === "exit") return;
            continue;
          }
          if (ended) return;
          await new Promise<void>((resolve) => (wake = resolve));
        }
      })(),
    };
  }

  async *exec(request: ExecRequest): AsyncIterable<OutputEvent | ExecResultEvent> {
    if (this.down) throw down("vmm agent");
    if (this.failRunWith !== undefined) throw this.failRunWith;
    if (!this.vms.has(request.vmId))
      throw new MsbError("SANDBOX_NOT_FOUND", `No VM ${request.vmId}.`);
    await Promise.resolve();
    yield* this.execScript(request);
  }
}
