import { Server, ServerCredentials } from "@grpc/grpc-js";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { MsbError } from "@msb/errors";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  ImageServiceClient,
  ImageServiceService,
  callUnary,
  createGrpcChannelCredentials,
  createTypedClient,
  progressEvent,
  readServerStream,
  serverStreamHandler,
  unaryHandler,
  type ImageServiceServer,
  type PullImageResponse,
} from "./index.js";

const logged: object[] = [];
const logger = { error: (obj: object) => logged.push(obj) };
const dir = mkdtempSync(join(tmpdir(), "msb-proto-"));
const address = `unix:${join(dir, "image.sock")}`;
let server: Server;
let client: ImageServiceClient;

const notImplemented = unaryHandler(logger, "x", () =>
  Promise.reject(new MsbError("INVALID_REQUEST", "unused in this test")),
);

beforeAll(async () => {
  server = new Server();
  const impl: ImageServiceServer = {
    pullImage: serverStreamHandler(
      logger,
      "PullImage",
      async function* (request: { reference: string }): AsyncGenerator<PullImageResponse> {
        await Promise.resolve();
        yield { event: { $case: "progress", value: progressEvent({ phase: "resolving" }) } };
        if (request.reference === "fault") throw new Error("disk exploded at /secret/path");
        throw new MsbError("IMAGE_NOT_FOUND", `No image '${request.reference}'.`, {
          details: { reference: request.reference },
        });
      },
    ),
    getImage: unaryHandler(logger, "GetImage", (request: { reference: string }) =>
      Promise.reject(new MsbError("IMAGE_NOT_FOUND", `No image '${request.reference}'.`)),
    ),
    listImages: notImplemented,
    // Answers only when the caller goes away: for deadlines and cancellation.
    removeImage: unaryHandler(
      logger,
      "RemoveImage",
      (_request, ctx) =>
        new Promise((_resolve, reject) =>
          ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason as Error)),
        ),
    ),
    prepareRootfs: serverStreamHandler(logger, "PrepareRootfs", async function* () {}),
    buildImage: serverStreamHandler(logger, "BuildImage", async function* () {}),
    pushImage: serverStreamHandler(logger, "PushImage", async function* () {}),
    checkPull: unaryHandler(logger, "CheckPull", (request: { reference: string }) =>
      Promise.resolve({
        reference: request.reference,
        registry: "r",
        present: true,
        registryAllowed: false,
      }),
    ),
  };
  server.addService(ImageServiceService, impl);
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(address, ServerCredentials.createInsecure(), (err) =>
      err ? reject(err) : resolve(),
    ),
  );
  client = new ImageServiceClient(address, createGrpcChannelCredentials());
});

afterAll(() => {
  client.close();
  server.forceShutdown();
  rmSync(dir, { recursive: true, force: true });
});

async function drain(reference: string): Promise<{ events: number; error: unknown }> {
  let events = 0;
  try {
    const stream = client.pullImage(
      { reference, platform: "" },
      { deadline: new Date(Date.now() + 60_000) },
    );
    for await (const _ of readServerStream("image service", stream)) events += 1;
  } catch (error) {
    return { events, error };
  }
  return { events, error: undefined };
}

describe("gRPC error edges", () => {
  it("ends a failed server stream with the MsbError code and details, not a hang", async () => {
    const { events, error } = await drain("nope");
    expect(events).toBe(1);
    expect(error).toBeInstanceOf(MsbError);
    expect((error as MsbError).code).toBe("IMAGE_NOT_FOUND");
    expect((error as MsbError).details).toEqual({ reference: "nope" });
  });

  it("turns an unexpected fault into an opaque INTERNAL error and logs the cause", async () => {
    const { error } = await drain("fault");
    expect((error as MsbError).code).toBe("INTERNAL");
    expect((error as MsbError).message).not.toContain("/secret/path");
    expect(logged.some((l) => JSON.stringify(l).includes("requestId"))).toBe(true);
  });

  it("maps unary errors back to MsbError", async () => {
    const err = await callUnary(
      "image service",
      client.getImage.bind(client),
      { reference: "x" },
      { timeoutMs: 10_000 },
    ).catch((e: unknown) => e);
    expect((err as MsbError).code).toBe("IMAGE_NOT_FOUND");
  });
});

describe("createTypedClient", () => {
  const typed = () =>
    createTypedClient(ImageServiceService, address, {
      service: "image service",
      defaultTimeoutMs: 30_000,
    });

  it("calls unary methods as promises and server streams as async iterables", async () => {
    const c = typed();
    try {
      expect(await c.checkPull({ reference: "a/b" })).toEqual({
        reference: "a/b",
        registry: "r",
        present: true,
        registryAllowed: false,
      });
      const phases: string[] = [];
      const err = await (async () => {
        for await (const m of c.pullImage({ reference: "nope", platform: "" })) {
          if (m.event?.$case === "progress") phases.push(m.event.value.phase);
        }
      })().catch((e: unknown) => e);
      expect(phases).toEqual(["resolving"]);
      expect(err).toMatchObject({ code: "IMAGE_NOT_FOUND", details: { reference: "nope" } });
      await expect(c.getImage({ reference: "x" })).rejects.toMatchObject({
        code: "IMAGE_NOT_FOUND",
      });
    } finally {
      c.close();
    }
  });

  it("always sets a deadline (TIMEOUT naming the service) and honours an AbortSignal", async () => {
    const c = typed();
    try {
      await expect(c.removeImage({ reference: "x" }, { timeoutMs: 200 })).rejects.toMatchObject({
        code: "TIMEOUT",
        message: expect.stringContaining("image service") as unknown,
      });
      const controller = new AbortController();
      const call = c.removeImage({ reference: "x" }, { signal: controller.signal });
      controller.abort();
      await expect(call).rejects.toMatchObject({ code: "CANCELLED" });
    } finally {
      c.close();
    }
  });
});
