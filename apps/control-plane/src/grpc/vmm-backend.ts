import { MsbError } from "@msb/errors";
import {
  NetworkMode,
  OutputStream,
  RunStatus,
  VmState,
  VmmServiceService,
  createTypedClient,
  type AttachRequest,
  type ExecResult,
  type RunCodeResult,
  type Vm,
} from "@msb/proto";
import type {
  AttachEvent,
  AttachInput,
  ExecResultEvent,
  OutputEvent,
  RunCodeResultEvent,
  StartKind,
  VmInfo,
  VmNetwork,
  VmStatus,
  VmmBackend,
} from "../sandboxes/backends.js";

const SERVICE = "vmm agent";

export interface GrpcVmmBackendOptions {
  /** `unix:/path` or `host:port`. */
  readonly address: string;
  readonly createVmMs: number;
  readonly stopVmMs: number;
  /** Deadline of ListVms, GetVmMetrics, GetHostInfo. */
  readonly probeMs: number;
  /**
   * Added to a run's own timeout for the gRPC deadline: the vmm-agent enforces the run
   * timeout and reports `timeout`; the deadline only catches a hung agent. Default 30 s.
   */
  readonly runGraceMs?: number;
  /** Deadline of ReadFile / WriteFile. Default 60 s. */
  readonly fileMs?: number;
}

export interface GrpcVmmBackend extends VmmBackend {
  close(): void;
}

const NETWORK: Readonly<Record<VmNetwork, NetworkMode>> = {
  none: NetworkMode.NETWORK_MODE_NONE,
  public: NetworkMode.NETWORK_MODE_PUBLIC,
  any: NetworkMode.NETWORK_MODE_ANY,
};

/** VmmBackend over the vmm-agent's gRPC API (proto/msb/vmm/v1). Every call has a deadline. */
export function createGrpcVmmBackend(options: GrpcVmmBackendOptions): GrpcVmmBackend {
  const client = createTypedClient(VmmServiceService, options.address, {
    service: SERVICE,
    defaultTimeoutMs: options.probeMs,
  });
  const grace = options.runGraceMs ?? 30_000;

  return {
    async hostInfo(signal) {
      const res = await client.getHostInfo(
        {},
        {
          timeoutMs: options.probeMs,
          signal,
        },
      );
      return {
        accelerator: res.accelerator,
        hypervisor: res.hypervisor,
        version: res.version,
        note: res.acceleratorNote,
        ...(res.isolation === undefined ? {} : { isolation: { ...res.isolation } }),
        vmsRunning: res.vmsRunning,
        maxVms: res.maxVms,
        vmsPaused: res.vmsPaused,
        templates: res.templates.map((t) => ({
          key: t.key,
          imageReference: t.imageReference,
          memoryMib: t.memoryMib,
          vcpus: t.vcpus,
          state: t.state,
          reason: t.reason,
          warmLanguage: t.warmLanguage,
          poolReady: t.poolReady,
          poolTarget: t.poolTarget,
          buildMs: t.buildMs,
        })),
        // Absent from a vmm-agent that does not count starts: left out, never reported as zeros.
        ...(res.starts === undefined ? {} : { starts: { ...res.starts } }),
      };
    },

    async createVm(spec, signal) {
      const res = await client.createVm(
        {
          vmId: spec.vmId,
          rootfsPath: spec.rootfs.path,
          imageReference: spec.rootfs.imageReference,
          manifestDigest: spec.rootfs.manifestDigest,
          memoryMib: spec.memoryMib,
          vcpus: spec.cpus,
          env: [...spec.env],
          workdir: spec.workdir,
          volumes: spec.volumes.map((v) => ({ ...v })),
          ports: spec.ports.map((p) => ({ ...p, hostAddress: "" })),
          network: NETWORK[spec.network],
          diskQuotaBytes: 0,
          hostname: spec.hostname,
          bootTimeoutMs: spec.bootTimeoutMs,
          keepDisk: spec.keepDisk,
        },
        // The boot deadline the caller asked for, or ours, plus a margin for the agent to report.
        { timeoutMs: Math.max(options.createVmMs, spec.bootTimeoutMs + 10_000), signal },
      );
      return toVmInfo(res.vm, spec.vmId);
    },

    async stopVm(vmId, signal, stopOptions) {
      await client.stopVm(
        { vmId, timeoutMs: 0, removeDisk: stopOptions?.removeDisk ?? false },
        { timeoutMs: options.stopVmMs, signal },
      );
    },

    async listVms(signal) {
      const res = await client.listVms(
        {},
        {
          timeoutMs: options.probeMs,
          signal,
        },
      );
      return res.vms.map((vm) => toVmInfo(vm, vm.vmId));
    },

    async vmUsage(vmId, signal) {
      const res = await client.getVmMetrics(
        { vmId },
        {
          timeoutMs: options.probeMs,
          signal,
        },
      );
      const m = res.metrics;
      return {
        running: m?.running ?? false,
        cpuPercent: m?.cpuUsagePercent ?? 0,
        memoryUsedBytes: m?.memoryUsedBytes ?? 0,
        diskUsedBytes: m?.diskUsedBytes ?? 0,
      };
    },

    async *runCode(request, signal) {
      const stream = client.runCode(
        {
          vmId: request.vmId,
          language: request.language,
          code: request.code,
          timeoutMs: request.timeoutMs,
        },
        { timeoutMs: request.timeoutMs + grace, signal },
      );
      yield* outputThenResult<RunCodeResult, RunCodeResultEvent>(stream, (r) => ({
        type: "result",
        status:
          r.status === RunStatus.RUN_STATUS_SUCCESS
            ? "success"
            : r.status === RunStatus.RUN_STATUS_TIMEOUT
              ? "timeout"
              : "error",
        errorType: r.errorType,
        errorMessage: r.errorMessage,
        traceback: r.traceback,
        truncated: r.truncated,
        restarted: r.restarted,
        durationMs: r.durationMs,
      }));
    },

    async *exec(request, signal) {
      const stream = client.exec(
        {
          vmId: request.vmId,
          execId: request.execId,
          command: request.command,
          args: [...request.args],
          env: [],
          workdir: "",
          timeoutMs: request.timeoutMs,
          stdin: Buffer.alloc(0),
        },
        { timeoutMs: request.timeoutMs + grace, signal },
      );
      yield* outputThenResult<ExecResult, ExecResultEvent>(stream, (r) => ({
        type: "result",
        exitCode: r.exitCode,
        signal: r.signal,
        timedOut: r.timedOut,
        truncated: r.truncated,
        durationMs: r.durationMs,
      }));
    },

    async readFile(vmId, path, maxBytes, signal) {
      // Streamed in chunks: one unary answer cannot carry more than gRPC's 4 MiB message.
      const stream = client.readFileStream(
        { vmId, path, maxBytes },
        { timeoutMs: options.fileMs ?? 60_000, signal },
      );
      const chunks: Buffer[] = [];
      let size = 0;
      let truncated = false;
      for await (const message of stream) {
        size += message.chunk.length;
        if (size > maxBytes) {
          throw new MsbError(
            "AGENT_PROTOCOL_ERROR",
            `The vmm-agent sent more than the ${maxBytes} bytes asked for while reading '${path}'. Retry; if it persists, restart the server.`,
            { details: { path, maxBytes } },
          );
        }
        chunks.push(message.chunk);
        truncated = message.truncated;
      }
      return { data: Buffer.concat(chunks, size), truncated };
    },

    async writeFile(vmId, path, data, { mode, createParents }, signal) {
      await client.writeFile(
        { vmId, path, data: Buffer.from(data), mode, createParents },
        { timeoutMs: options.fileMs ?? 60_000, signal },
      );
    },

    attach(spec, signal) {
      // No deadline: the session lasts as long as the caller keeps it; `signal` ends it.
      const call = client.attach({ signal });
      void call.send({
        event: {
          $case: "start",
          value: {
            vmId: spec.vmId,
            command: spec.command,
            args: [...spec.args],
            env: [...spec.env],
            workdir: spec.workdir,
            pty: spec.pty === undefined ? undefined : { ...spec.pty },
          },
        },
      });
      return {
        send: (input: AttachInput) => call.send(toAttachRequest(input)),
        events: (async function* (): AsyncGenerator<AttachEvent> {
          for await (const message of call.responses) {
            const event = message.event;
            switch (event?.$case) {
              case "started":
                yield { type: "started", pid: event.value.pid };
                break;
              case "output":
                yield toOutput(event.value.stream, event.value.data);
                break;
              case "exit":
                yield {
                  type: "exit",
                  exitCode: event.value.exitCode,
                  signal: event.value.signal,
                  durationMs: event.value.durationMs,
                };
                return;
              case undefined:
                break;
            }
          }
        })(),
      };
    },

    close() {
      client.close();
    },
  };
}

function toAttachRequest(input: AttachInput): AttachRequest {
  switch (input.type) {
    case "stdin":
      return { event: { $case: "stdin", value: Buffer.from(input.data) } };
    case "resize":
      return { event: { $case: "resize", value: { rows: input.rows, cols: input.cols } } };
    case "signal":
      return { event: { $case: "signal", value: input.signal } };
    case "eof":
      return { event: { $case: "stdinEof", value: {} } };
  }
}

type OutputOrResult<R> =
  | { readonly $case: "output"; readonly value: { stream: OutputStream; data: Uint8Array } }
  | { readonly $case: "result"; readonly value: R };

/** Yields a run's output events, and its result mapped by `toResult` (RunCode and Exec). */
async function* outputThenResult<R, E>(
  stream: AsyncIterable<{ event?: OutputOrResult<R> | undefined }>,
  toResult: (result: R) => E,
): AsyncGenerator<OutputEvent | E> {
  for await (const message of stream) {
    const event = message.event;
    if (event?.$case === "output") yield toOutput(event.value.stream, event.value.data);
    else if (event?.$case === "result") yield toResult(event.value);
  }
}

function toOutput(stream: OutputStream, data: Uint8Array): OutputEvent {
  return {
    type: "output",
    stream: stream === OutputStream.OUTPUT_STREAM_STDERR ? "stderr" : "stdout",
    data,
  };
}

const STATUS: Readonly<Partial<Record<VmState, VmStatus>>> = {
  [VmState.VM_STATE_STARTING]: "starting",
  [VmState.VM_STATE_RUNNING]: "running",
  [VmState.VM_STATE_STOPPING]: "stopping",
  [VmState.VM_STATE_STOPPED]: "stopped",
  [VmState.VM_STATE_FAILED]: "failed",
};

const START_KINDS: ReadonlySet<string> = new Set<StartKind>(["cold", "template", "pool"]);

function toVmInfo(vm: Vm | undefined, vmId: string): VmInfo {
  // An older vmm-agent sends "" and 0: unknown, so left out rather than reported as cold.
  const startKind = vm !== undefined && START_KINDS.has(vm.startKind) ? vm.startKind : undefined;
  return {
    vmId: vm?.vmId ?? vmId,
    status: vm === undefined ? "unknown" : (STATUS[vm.state] ?? "unknown"),
    reason: vm?.reason ?? "",
    accelerator: vm?.accelerator ?? "",
    ...(startKind === undefined ? {} : { startKind: startKind as StartKind }),
    ...(vm === undefined || vm.bootMs === 0 ? {} : { bootMs: vm.bootMs }),
    ...(vm === undefined ? {} : { paused: vm.paused }),
  };
}
