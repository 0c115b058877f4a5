import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  Server,
  ServerCredentials,
  type ServerWritableStream,
  type UntypedServiceImplementation,
} from "@grpc/grpc-js";
import { MsbError } from "@msb/errors";
import {
  ImageServiceService,
  OutputStream,
  RunStatus,
  VmState,
  VmmServiceService,
  progressEvent,
  serverStreamHandler,
  toServiceError,
  unaryHandler,
  type CreateVmRequest,
  type PrepareRootfsResponse,
  type ReadFileStreamResponse,
  type RunCodeResponse,
} from "@msb/proto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CreateVmSpec } from "../sandboxes/backends.js";
import { createGrpcImageBackend } from "./image-backend.js";
import { createGrpcVmmBackend } from "./vmm-backend.js";

// The real gRPC clients against a real grpc-js server on a unix socket: the wire mapping
// (fields, enums, streams, error trailers, deadlines) that the fakes in other tests skip.

const silent = { error: () => undefined };
const bigFile = Buffer.alloc(6 * 1024 * 1024, 7);
const unimplemented = () => {
  throw new MsbError("INTERNAL", "not used by this test");
};

describe("gRPC backends", () => {
  let dir: string;
  let server: Server;
  let address: string;
  const created: CreateVmRequest[] = [];
  const written: number[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "msb-grpc-"));
    address = `unix:${join(dir, "svc.sock")}`;
    // The vmm-agent's own receive limit (apps/vmm-agent/src/main.ts), so writes are tested as sent.
    server = new Server({ "grpc.max_receive_message_length": 64 * 1024 * 1024 });
    const vmm: UntypedServiceImplementation = {
      getHostInfo: unaryHandler(silent, "GetHostInfo", () =>
        Promise.resolve({
          accelerator: "tcg",
          hypervisor: "qemu",
          version: "1",
          hostCpus: 2,
          hostMemoryTotalBytes: 0,
          hostMemoryAvailableBytes: 0,
          vmsRunning: 2,
          maxVms: 24,
          acceleratorNote: "kvm probe failed",
          templates: [
            {
              key: "k1",
              imageReference: "docker.io/x:latest",
              memoryMib: 512,
              vcpus: 1,
              state: "ready",
              reason: "",
              warmLanguage: "python",
              poolReady: 1,
              poolTarget: 2,
              buildMs: 4000,
            },
          ],
          starts: { poolHits: 3, poolMisses: 1, templateRestores: 1, coldBoots: 2 },
          vmsPaused: 1,
          templateMemoryUsedMib: 0,
          templateMemoryMaxMib: 0,
          isolation: {
            seccomp: true,
            qemuUser: "dedicated uid per VM",
            networkPolicyEnforced: false,
            networkPolicyNote: "not enforced: iptables failed",
          },
        }),
      ),
      createVm: unaryHandler(silent, "CreateVm", (req: CreateVmRequest) => {
        created.push(req);
        return Promise.resolve({
          vm: {
            vmId: req.vmId,
            state: VmState.VM_STATE_RUNNING,
            reason: "",
            accelerator: "tcg",
            pid: 1,
            startedUnixMs: 0,
            memoryMib: req.memoryMib,
            vcpus: req.vcpus,
            imageReference: req.imageReference,
            bootMs: 600,
            startKind: "pool",
            acceleratorNote: "",
            paused: false,
          },
        });
      }),
      stopVm: unaryHandler(silent, "StopVm", (req: { vmId: string }) =>
        Promise.reject(
          new MsbError("SANDBOX_NOT_FOUND", `No VM ${req.vmId}.`, { details: { vmId: req.vmId } }),
        ),
      ),
      listVms: unaryHandler(silent, "ListVms", () => new Promise(() => undefined)), // hangs
      getVmMetrics: unaryHandler(silent, "GetVmMetrics", unimplemented),
      exec: serverStreamHandler(silent, "Exec", unimplemented),
      runCode: serverStreamHandler(
        silent,
        "RunCode",
        async function* (): AsyncGenerator<RunCodeResponse> {
          await Promise.resolve();
          const chunk = (stream: OutputStream, text: string): RunCodeResponse => ({
            event: { $case: "output", value: { stream, data: Buffer.from(text) } },
          });
          yield chunk(OutputStream.OUTPUT_STREAM_STDOUT, "Hello World!\n");
          yield chunk(OutputStream.OUTPUT_STREAM_STDERR, "warning\n");
          yield {
            event: {
              $case: "result",
              value: {
                status: RunStatus.RUN_STATUS_ERROR,
                errorType: "NameError",
                errorMessage: "name 'x' is not defined",
                traceback: "Traceback ...",
                truncated: false,
                restarted: false,
                durationMs: 7,
              },
            },
          };
        },
      ),
      signalProcess: unaryHandler(silent, "SignalProcess", unimplemented),
      // A guest file larger than gRPC's default 4 MiB message: one unary answer cannot carry it.
      readFile: unaryHandler(silent, "ReadFile", (req: { maxBytes: number }) =>
        Promise.resolve({
          data: bigFile.subarray(0, req.maxBytes),
          truncated: req.maxBytes < bigFile.length,
        }),
      ),
      readFileStream: serverStreamHandler(
        silent,
        "ReadFileStream",
        async function* (req: { maxBytes: number }): AsyncGenerator<ReadFileStreamResponse> {
          await Promise.resolve();
          const data = bigFile.subarray(0, req.maxBytes);
          for (let at = 0; at < data.length; at += 1024 * 1024) {
            yield { chunk: data.subarray(at, at + 1024 * 1024), truncated: false };
          }
          yield { chunk: Buffer.alloc(0), truncated: req.maxBytes < bigFile.length };
        },
      ),
      writeFile: unaryHandler(silent, "WriteFile", (req: { data: Buffer }) => {
        written.push(req.data.length);
        return Promise.resolve({});
      }),
    };
    const prepareRootfs = serverStreamHandler(
      silent,
      "PrepareRootfs",
      async function* (): AsyncGenerator<PrepareRootfsResponse> {
        await Promise.resolve();
        yield {
          event: {
            $case: "progress",
            value: progressEvent({ phase: "downloading" }),
          },
        };
        yield {
          event: {
            $case: "rootfs",
            value: {
              path: "/images/rootfs/abc.erofs",
              format: "erofs",
              sizeBytes: 1,
              cached: false,
              image: {
                reference: "docker.io/microsandbox/python:latest",
                registry: "docker.io",
                repository: "microsandbox/python",
                tag: "latest",
                manifestDigest: "sha256:abc",
                configDigest: "",
                platform: "linux/amd64",
                layers: [],
                compressedSizeBytes: 0,
                storedUnixMs: 0,
                config: {
                  env: ["PATH=/usr/bin"],
                  entrypoint: [],
                  cmd: [],
                  workingDir: "/app",
                  user: "",
                  labels: {},
                },
              },
            },
          },
        };
      },
    );
    const image: UntypedServiceImplementation = {
      prepareRootfs: (call: ServerWritableStream<{ reference: string }, PrepareRootfsResponse>) => {
        if (call.request.reference !== "missing") {
          prepareRootfs(call);
          return;
        }
        // The status is emitted by hand here, as a peer not built on serverStreamHandler would.
        call.emit(
          "error",
          toServiceError(new MsbError("IMAGE_NOT_FOUND", "No such image: missing.")),
        );
      },
    };
    server.addService(VmmServiceService, vmm);
    server.addService(ImageServiceService, image);
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(address, ServerCredentials.createInsecure(), (err) =>
        err ? reject(err) : resolve(),
      ),
    );
  });

  afterAll(async () => {
    await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    await rm(dir, { recursive: true, force: true });
  });

  const signal = () => AbortSignal.timeout(10_000);

  it("prepares a rootfs from the stream's last event, with the image's env and workdir", async () => {
    const image = createGrpcImageBackend({ address, prepareRootfsMs: 10_000, probeMs: 2_000 });
    try {
      await expect(image.prepareRootfs("microsandbox/python", signal())).resolves.toEqual({
        path: "/images/rootfs/abc.erofs",
        imageReference: "docker.io/microsandbox/python:latest",
        manifestDigest: "sha256:abc",
        env: ["PATH=/usr/bin"],
        workdir: "/app",
      });
      await expect(image.prepareRootfs("missing", signal())).rejects.toMatchObject({
        code: "IMAGE_NOT_FOUND",
        message: "No such image: missing.",
      });
      await expect(image.ping(signal())).resolves.toBeUndefined();
    } finally {
      image.close();
    }
  });

  it("creates a VM with every field mapped, and reads host info", async () => {
    const vmm = createGrpcVmmBackend({
      address,
      createVmMs: 10_000,
      stopVmMs: 2_000,
      probeMs: 2_000,
    });
    const spec: CreateVmSpec = {
      vmId: "default/sb",
      rootfs: {
        path: "/r.erofs",
        imageReference: "docker.io/x:latest",
        manifestDigest: "sha256:1",
        env: [],
        workdir: "",
      },
      memoryMib: 1024,
      cpus: 2,
      env: ["A=1"],
      workdir: "/w",
      volumes: [{ hostPath: "/h", guestPath: "/g", readOnly: true }],
      ports: [{ hostPort: 10001, guestPort: 80, protocol: "tcp" }],
      network: "none",
      hostname: "sb",
      bootTimeoutMs: 0,
      keepDisk: true,
    };
    try {
      await expect(vmm.createVm(spec, signal())).resolves.toMatchObject({
        vmId: "default/sb",
        status: "running",
        startKind: "pool",
        bootMs: 600,
        paused: false,
      });
      expect(created.at(-1)).toMatchObject({
        vmId: "default/sb",
        rootfsPath: "/r.erofs",
        memoryMib: 1024,
        vcpus: 2,
        env: ["A=1"],
        volumes: [{ hostPath: "/h", guestPath: "/g", readOnly: true }],
        ports: [{ hostPort: 10001, guestPort: 80, protocol: "tcp" }],
        network: 1,
        keepDisk: true,
      });
      await expect(vmm.hostInfo(signal())).resolves.toEqual({
        accelerator: "tcg",
        hypervisor: "qemu",
        version: "1",
        note: "kvm probe failed",
        vmsRunning: 2,
        maxVms: 24,
        vmsPaused: 1,
        templates: [
          {
            key: "k1",
            imageReference: "docker.io/x:latest",
            memoryMib: 512,
            vcpus: 1,
            state: "ready",
            reason: "",
            warmLanguage: "python",
            poolReady: 1,
            poolTarget: 2,
            buildMs: 4000,
          },
        ],
        starts: { poolHits: 3, poolMisses: 1, templateRestores: 1, coldBoots: 2 },
        isolation: {
          seccomp: true,
          qemuUser: "dedicated uid per VM",
          networkPolicyEnforced: false,
          networkPolicyNote: "not enforced: iptables failed",
        },
      });
    } finally {
      vmm.close();
    }
  });

  it("streams REPL output and maps the result", async () => {
    const vmm = createGrpcVmmBackend({
      address,
      createVmMs: 10_000,
      stopVmMs: 2_000,
      probeMs: 2_000,
    });
    try {
      const events = [];
      for await (const e of vmm.runCode(
        { vmId: "default/sb", language: "python", code: "x", timeoutMs: 5_000 },
        signal(),
      )) {
        events.push(e.type === "output" ? { ...e, data: Buffer.from(e.data).toString() } : e);
      }
      expect(events).toEqual([
        { type: "output", stream: "stdout", data: "Hello World!\n" },
        { type: "output", stream: "stderr", data: "warning\n" },
        expect.objectContaining({ type: "result", status: "error", errorType: "NameError" }),
      ]);
    } finally {
      vmm.close();
    }
  });

  it("reads a guest file larger than one gRPC message (4 MiB) whole", async () => {
    const vmm = createGrpcVmmBackend({
      address,
      createVmMs: 10_000,
      stopVmMs: 2_000,
      probeMs: 2_000,
    });
    try {
      const file = await vmm.readFile("default/sb", "/big", 16 * 1024 * 1024, signal());
      expect(file.truncated).toBe(false);
      expect(file.data.length).toBe(bigFile.length);
      expect(Buffer.from(file.data).equals(bigFile)).toBe(true);
      const head = await vmm.readFile("default/sb", "/big", 5 * 1024 * 1024, signal());
      expect(head).toMatchObject({ truncated: true });
      expect(head.data.length).toBe(5 * 1024 * 1024);
      // The other direction: a write larger than 4 MiB is sent whole (the client has no send cap).
      await vmm.writeFile(
        "default/sb",
        "/big",
        bigFile,
        { mode: 0o644, createParents: true },
        signal(),
      );
      expect(written).toEqual([bigFile.length]);
    } finally {
      vmm.close();
    }
  });

  it("brings the service's error code back from the trailers", async () => {
    const vmm = createGrpcVmmBackend({
      address,
      createVmMs: 10_000,
      stopVmMs: 2_000,
      probeMs: 2_000,
    });
    try {
      await expect(vmm.stopVm("default/ghost", signal())).rejects.toMatchObject({
        code: "SANDBOX_NOT_FOUND",
        details: { vmId: "default/ghost" },
      });
    } finally {
      vmm.close();
    }
  });

  it("gives up on a hung call at its deadline", async () => {
    const vmm = createGrpcVmmBackend({
      address,
      createVmMs: 10_000,
      stopVmMs: 2_000,
      probeMs: 300,
    });
    try {
      await expect(vmm.listVms(signal())).rejects.toMatchObject({ code: "TIMEOUT" });
    } finally {
      vmm.close();
    }
  });

  it("says SERVICE_UNAVAILABLE when nothing listens", async () => {
    const gone = `unix:${join(dir, "nobody.sock")}`;
    const vmm = createGrpcVmmBackend({
      address: gone,
      createVmMs: 2_000,
      stopVmMs: 2_000,
      probeMs: 2_000,
    });
    const image = createGrpcImageBackend({ address: gone, prepareRootfsMs: 2_000, probeMs: 300 });
    try {
      await expect(vmm.listVms(signal())).rejects.toMatchObject({ code: "SERVICE_UNAVAILABLE" });
      await expect(image.ping(signal())).rejects.toMatchObject({ code: "SERVICE_UNAVAILABLE" });
      await expect(image.prepareRootfs("x", signal())).rejects.toMatchObject({
        code: "SERVICE_UNAVAILABLE",
      });
    } finally {
      vmm.close();
      image.close();
    }
  });
});
