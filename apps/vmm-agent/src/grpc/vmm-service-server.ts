import {
  NetworkMode,
  OutputStream,
  RunStatus,
  VmState,
  serverStreamHandler,
  unaryHandler,
  type ExecResponse,
  type ReadFileStreamResponse,
  type RunCodeResponse,
  type Vm,
  type VmmServiceServer,
} from "@msb/proto";
import type { Logger } from "@msb/runtime";
import type {
  NetworkPolicy,
  OutputStreamName,
  VmInfo,
  VmService,
  VmStateName,
} from "../vms/types.js";
import { createAttachHandler } from "./attach-handler.js";

const STATE: Readonly<Record<VmStateName, VmState>> = {
  starting: VmState.VM_STATE_STARTING,
  running: VmState.VM_STATE_RUNNING,
  stopping: VmState.VM_STATE_STOPPING,
  stopped: VmState.VM_STATE_STOPPED,
  failed: VmState.VM_STATE_FAILED,
};

const STREAM: Readonly<Record<OutputStreamName, OutputStream>> = {
  stdout: OutputStream.OUTPUT_STREAM_STDOUT,
  stderr: OutputStream.OUTPUT_STREAM_STDERR,
};

/** ReadFileStream chunk size: well below gRPC's default 4 MiB message limit. */
const READ_CHUNK_BYTES = 1024 * 1024;

const RUN_STATUS = {
  success: RunStatus.RUN_STATUS_SUCCESS,
  error: RunStatus.RUN_STATUS_ERROR,
  timeout: RunStatus.RUN_STATUS_TIMEOUT,
} as const;

function network(mode: NetworkMode): NetworkPolicy {
  switch (mode) {
    case NetworkMode.NETWORK_MODE_NONE:
      return "none";
    case NetworkMode.NETWORK_MODE_ANY:
      return "any";
    case NetworkMode.NETWORK_MODE_PUBLIC:
    case NetworkMode.NETWORK_MODE_UNSPECIFIED:
    case NetworkMode.UNRECOGNIZED:
      return "public";
  }
}

/** Maps a VM to its wire form. */
export function toVm(vm: VmInfo): Vm {
  return {
    vmId: vm.vmId,
    state: STATE[vm.state],
    reason: vm.reason,
    accelerator: vm.accelerator,
    acceleratorNote: vm.acceleratorNote,
    pid: vm.pid,
    startedUnixMs: vm.startedUnixMs,
    memoryMib: vm.memoryMib,
    vcpus: vm.vcpus,
    imageReference: vm.imageReference,
    bootMs: vm.bootMs,
    startKind: vm.startKind,
    paused: vm.paused,
  };
}

/** The gRPC adapter of VmmService: parse, call the service, map. No decisions here. */
export function createVmmServiceServer(service: VmService, logger: Logger): VmmServiceServer {
  return {
    getHostInfo: unaryHandler(logger, "GetHostInfo", async () => {
      const host = await service.hostInfo();
      return {
        accelerator: host.accelerator,
        hypervisor: host.hypervisor,
        version: host.version,
        hostCpus: host.hostCpus,
        hostMemoryTotalBytes: host.hostMemoryTotalBytes,
        hostMemoryAvailableBytes: host.hostMemoryAvailableBytes,
        vmsRunning: host.vmsRunning,
        maxVms: host.maxVms,
        acceleratorNote: host.acceleratorNote,
        templates: host.templates.map((t) => ({ ...t })),
        starts: { ...host.starts },
        vmsPaused: host.vmsPaused,
        templateMemoryUsedMib: host.templateMemory.usedMib,
        templateMemoryMaxMib: host.templateMemory.maxMib,
        isolation: {
          seccomp: host.isolation.seccomp,
          qemuUser: host.isolation.qemuUser,
          networkPolicyEnforced: host.isolation.networkPolicy.enforced,
          networkPolicyNote: host.isolation.networkPolicy.note,
        },
      };
    }),

    createVm: unaryHandler(logger, "CreateVm", async (req, ctx) => {
      const vm = await service.createVm(
        {
          vmId: req.vmId,
          rootfsPath: req.rootfsPath,
          imageReference: req.imageReference,
          memoryMib: req.memoryMib,
          vcpus: req.vcpus,
          env: req.env,
          workdir: req.workdir,
          volumes: req.volumes.map((v) => ({
            hostPath: v.hostPath,
            guestPath: v.guestPath,
            readOnly: v.readOnly,
          })),
          ports: req.ports.map((p) => ({
            hostPort: p.hostPort,
            guestPort: p.guestPort,
            protocol: p.protocol,
            hostAddress: p.hostAddress,
          })),
          network: network(req.network),
          diskQuotaBytes: req.diskQuotaBytes,
          hostname: req.hostname,
          bootTimeoutMs: req.bootTimeoutMs,
          keepDisk: req.keepDisk,
        },
        ctx.signal,
      );
      return { vm: toVm(vm) };
    }),

    stopVm: unaryHandler(logger, "StopVm", async (req) => {
      const vm = await service.stopVm(req.vmId, {
        timeoutMs: req.timeoutMs,
        removeDisk: req.removeDisk,
      });
      return { vm: toVm(vm) };
    }),

    listVms: unaryHandler(logger, "ListVms", () =>
      Promise.resolve({ vms: service.listVms().map(toVm) }),
    ),

    getVmMetrics: unaryHandler(logger, "GetVmMetrics", async (req, ctx) => ({
      metrics: await service.metrics(req.vmId, ctx.signal),
    })),

    exec: serverStreamHandler(logger, "Exec", async function* (req, ctx) {
      const events = service.exec(
        {
          vmId: req.vmId,
          execId: req.execId,
          command: req.command,
          args: req.args,
          env: req.env,
          workdir: req.workdir,
          timeoutMs: req.timeoutMs,
          stdin: req.stdin,
        },
        ctx.signal,
      );
      for await (const event of events) {
        const message: ExecResponse =
          event.kind === "output"
            ? {
                event: {
                  $case: "output",
                  value: { stream: STREAM[event.stream], data: event.data },
                },
              }
            : {
                event: {
                  $case: "result",
                  value: {
                    exitCode: event.exitCode,
                    signal: event.signal,
                    timedOut: event.timedOut,
                    durationMs: event.durationMs,
                    truncated: event.truncated,
                  },
                },
              };
        yield message;
      }
    }),

    runCode: serverStreamHandler(logger, "RunCode", async function* (req, ctx) {
      const events = service.runCode(
        { vmId: req.vmId, language: req.language, code: req.code, timeoutMs: req.timeoutMs },
        ctx.signal,
      );
      for await (const event of events) {
        const message: RunCodeResponse =
          event.kind === "output"
            ? {
                event: {
                  $case: "output",
                  value: { stream: STREAM[event.stream], data: event.data },
                },
              }
            : {
                event: {
                  $case: "result",
                  value: {
                    status: RUN_STATUS[event.status],
                    errorType: event.errorType,
                    errorMessage: event.errorMessage,
                    traceback: event.traceback,
                    truncated: event.truncated,
                    restarted: event.restarted,
                    durationMs: event.durationMs,
                  },
                },
              };
        yield message;
      }
    }),

    signalProcess: unaryHandler(logger, "SignalProcess", async (req) => {
      await service.signalProcess(req.vmId, req.execId, req.signal);
      return {};
    }),

    readFile: unaryHandler(logger, "ReadFile", async (req, ctx) =>
      service.readFile(req.vmId, req.path, req.maxBytes, ctx.signal),
    ),

    // The same read, sent in chunks below gRPC's 4 MiB message limit.
    readFileStream: serverStreamHandler(
      logger,
      "ReadFileStream",
      async function* (req, ctx): AsyncGenerator<ReadFileStreamResponse> {
        const file = await service.readFile(req.vmId, req.path, req.maxBytes, ctx.signal);
        const data = Buffer.from(file.data.buffer, file.data.byteOffset, file.data.byteLength);
        for (let at = 0; at < data.length; at += READ_CHUNK_BYTES) {
          yield { chunk: data.subarray(at, at + READ_CHUNK_BYTES), truncated: false };
        }
        yield { chunk: Buffer.alloc(0), truncated: file.truncated };
      },
    ),

    writeFile: unaryHandler(logger, "WriteFile", async (req, ctx) => {
      await service.writeFile(
        req.vmId,
        req.path,
        req.data,
        { mode: req.mode, createParents: req.createParents },
        ctx.signal,
      );
      return {};
    }),

    attach: createAttachHandler(service, logger),
  };
}
