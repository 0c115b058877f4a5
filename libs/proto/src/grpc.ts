import {
  Client,
  Metadata,
  credentials,
  status,
  type ChannelCredentials,
  type ChannelOptions,
  type MethodDefinition,
  type ClientDuplexStream,
  type ClientReadableStream,
  type ClientUnaryCall,
  type ServerDuplexStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceError,
  type sendUnaryData,
} from "@grpc/grpc-js";
import { MsbError, grpcStatusOf, msbErrorFromWire, toMsbError } from "@msb/errors";

/** Trailing metadata key holding the msb error code (UPPER_SNAKE string). */
export const ERROR_CODE_METADATA_KEY = "msb-error-code";
/** Trailing metadata key holding the error details as JSON. */
export const ERROR_DETAILS_METADATA_KEY = "msb-error-details";

/** Services talk over loopback or a private network; TLS is a deployment concern. */
export function createGrpcChannelCredentials(): ChannelCredentials {
  return credentials.createInsecure();
}

/** Turns an MsbError (or anything thrown) into a gRPC status with the code in trailers. */
export function toServiceError(err: unknown, requestId?: string): Partial<ServiceError> {
  const msbError = toMsbError(err, requestId);
  const metadata = new Metadata();
  metadata.set(ERROR_CODE_METADATA_KEY, msbError.code);
  metadata.set(ERROR_DETAILS_METADATA_KEY, JSON.stringify(msbError.details));
  return { code: grpcStatusOf(msbError), details: msbError.message, metadata };
}

/**
 * Turns a gRPC client error back into an MsbError. A peer that is down becomes
 * SERVICE_UNAVAILABLE and a passed deadline TIMEOUT, each naming the service.
 */
export function fromServiceError(err: unknown, service: string): MsbError {
  if (err instanceof MsbError) return err;
  const e = err as Partial<ServiceError>;
  const code = e.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
  if (typeof code === "string") {
    const raw = e.metadata?.get(ERROR_DETAILS_METADATA_KEY)[0];
    let details: unknown = {};
    try {
      details = typeof raw === "string" ? JSON.parse(raw) : {};
    } catch {
      details = {};
    }
    return msbErrorFromWire(code, e.details ?? e.message ?? "", details);
  }
  if (e.code === status.UNAVAILABLE) {
    return new MsbError(
      "SERVICE_UNAVAILABLE",
      `The ${service} is not reachable; it may be starting or restarting. Retry in a few seconds; 'msb server status' shows its state.`,
      { details: { service }, cause: err },
    );
  }
  if (e.code === status.DEADLINE_EXCEEDED) {
    return new MsbError("TIMEOUT", `The ${service} did not answer in time. Retry.`, {
      details: { service },
      cause: err,
    });
  }
  if (e.code === status.CANCELLED) {
    return new MsbError("CANCELLED", `The call to the ${service} was cancelled.`, {
      details: { service },
      cause: err,
    });
  }
  return toMsbError(err);
}

type UnaryMethod<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: { deadline: Date },
  callback: (err: ServiceError | null, response: Res) => void,
) => ClientUnaryCall;

/**
 * Calls a unary method with a deadline (always set: a hung peer must not hang the caller) and
 * an optional AbortSignal; errors come back as MsbError.
 */
export function callUnary<Req, Res>(
  service: string,
  method: UnaryMethod<Req, Res>,
  request: Req,
  options: { timeoutMs: number; signal?: AbortSignal },
): Promise<Res> {
  return new Promise<Res>((resolve, reject) => {
    const call = method(
      request,
      new Metadata(),
      { deadline: new Date(Date.now() + options.timeoutMs) },
      (err, response) => {
        options.signal?.removeEventListener("abort", onAbort);
        if (err) reject(fromServiceError(err, service));
        else resolve(response);
      },
    );
    const onAbort = (): void => call.cancel();
    if (options.signal?.aborted === true) call.cancel();
    else options.signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Iterates a server stream, mapping its error to MsbError. Cancelling the signal (or
 * breaking out of the loop) cancels the call.
 */
export async function* readServerStream<Res>(
  service: string,
  stream: ClientReadableStream<Res>,
  signal?: AbortSignal,
): AsyncGenerator<Res> {
  const onAbort = (): void => stream.cancel();
  if (signal?.aborted === true) stream.cancel();
  else signal?.addEventListener("abort", onAbort, { once: true });
  try {
    for await (const message of stream as AsyncIterable<Res>) yield message;
  } catch (err) {
    throw fromServiceError(err, service);
  } finally {
    signal?.removeEventListener("abort", onAbort);
    stream.cancel();
  }
}

/** What a handler gets besides the request: a signal that aborts when the caller goes away. */
export interface HandlerContext {
  readonly signal: AbortSignal;
  readonly metadata: Metadata;
}

interface ErrorLogger {
  error(obj: object, msg: string): void;
}

function logIfInternal(logger: ErrorLogger, err: unknown, method: string): Partial<ServiceError> {
  const requestId = crypto.randomUUID();
  const serviceError = toServiceError(err, requestId);
  if (!(err instanceof MsbError)) logger.error({ err, method, requestId }, "internal error");
  return serviceError;
}

/** Adapts an async function to a grpc-js unary handler; thrown errors become statuses. */
export function unaryHandler<Req, Res>(
  logger: ErrorLogger,
  method: string,
  fn: (request: Req, ctx: HandlerContext) => Promise<Res>,
): (call: ServerUnaryCall<Req, Res>, callback: sendUnaryData<Res>) => void {
  return (call, callback) => {
    const controller = new AbortController();
    call.on("cancelled", () =>
      controller.abort(new MsbError("CANCELLED", "The caller went away.")),
    );
    fn(call.request, { signal: controller.signal, metadata: call.metadata }).then(
      (res) => callback(null, res),
      (err: unknown) => callback(logIfInternal(logger, err, method), null),
    );
  };
}

/**
 * Adapts an async generator to a grpc-js server-streaming handler, honouring back-pressure:
 * the generator is not pulled again until the previous message was flushed.
 */
export function serverStreamHandler<Req, Res>(
  logger: ErrorLogger,
  method: string,
  fn: (request: Req, ctx: HandlerContext) => AsyncIterable<Res>,
): (call: ServerWritableStream<Req, Res>) => void {
  return (call) => {
    const controller = new AbortController();
    call.on("cancelled", () =>
      controller.abort(new MsbError("CANCELLED", "The caller went away.")),
    );
    void (async () => {
      try {
        for await (const message of fn(call.request, {
          signal: controller.signal,
          metadata: call.metadata,
        })) {
          if (controller.signal.aborted) return;
          if (!call.write(message)) {
            await new Promise<void>((resolve) => {
              call.once("drain", resolve);
              controller.signal.addEventListener("abort", () => resolve(), { once: true });
            });
          }
        }
        call.end();
      } catch (err) {
        if (controller.signal.aborted) return;
        // grpc-js sends a status (with our trailers) for an error emitted on the call;
        // destroy() would drop the stream and leave the client waiting for its deadline.
        call.emit("error", logIfInternal(logger, err, method));
      }
    })();
  };
}

/**
 * Adapts a function of the incoming messages to a grpc-js bidi handler. Outgoing messages are
 * written with back-pressure (the generator is not pulled until the previous one flushed);
 * incoming ones are read only as fast as `fn` consumes them. A thrown error becomes the
 * status (code in trailers); the signal aborts when the caller goes away.
 */
export function bidiStreamHandler<Req, Res>(
  logger: ErrorLogger,
  method: string,
  fn: (requests: AsyncIterable<Req>, ctx: HandlerContext) => AsyncIterable<Res>,
): (call: ServerDuplexStream<Req, Res>) => void {
  return (call) => {
    const controller = new AbortController();
    call.on("cancelled", () =>
      controller.abort(new MsbError("CANCELLED", "The caller went away.")),
    );
    void (async () => {
      try {
        for await (const message of fn(call as AsyncIterable<Req>, {
          signal: controller.signal,
          metadata: call.metadata,
        })) {
          if (controller.signal.aborted) return;
          if (!call.write(message)) {
            await new Promise<void>((resolve) => {
              call.once("drain", resolve);
              controller.signal.addEventListener("abort", () => resolve(), { once: true });
            });
          }
        }
        call.end();
      } catch (err) {
        if (controller.signal.aborted) return;
        call.emit("error", logIfInternal(logger, err, method));
      }
    })();
  };
}

/** The client side of a bidi call: `send` honours back-pressure, `responses` maps errors. */
export interface BidiCall<Req, Res> {
  /** Resolves once the message is buffered below the high-water mark. */
  send(message: Req): Promise<void>;
  /** Half-closes: no more requests. */
  end(): void;
  /** Cancels the call (the server sees the caller go away). */
  cancel(): void;
  readonly responses: AsyncGenerator<Res>;
}

/**
 * Wraps a grpc-js duplex call. Cancelling the signal cancels the call; errors come back as
 * MsbError naming `service`. Interactive calls have no deadline: they last as long as the
 * caller keeps them open, and the signal is how the caller ends them.
 */
export function openBidiCall<Req, Res>(
  service: string,
  call: ClientDuplexStream<Req, Res>,
  signal?: AbortSignal,
): BidiCall<Req, Res> {
  const onAbort = (): void => call.cancel();
  if (signal?.aborted === true) call.cancel();
  else signal?.addEventListener("abort", onAbort, { once: true });
  // Errors surface through `responses`; a write after the end must not crash the process.
  call.on("error", () => undefined);
  async function* responses(): AsyncGenerator<Res> {
    try {
      for await (const message of call as AsyncIterable<Res>) yield message;
    } catch (err) {
      throw fromServiceError(err, service);
    } finally {
      signal?.removeEventListener("abort", onAbort);
      call.cancel();
    }
  }
  return {
    send: (message) =>
      new Promise<void>((resolve) => {
        if (call.destroyed || call.writableEnded) {
          resolve();
          return;
        }
        if (call.write(message)) resolve();
        else call.once("drain", () => resolve());
      }),
    end: () => {
      if (!call.writableEnded) call.end();
    },
    cancel: () => call.cancel(),
    responses: responses(),
  };
}

/** Per-call options of a {@link TypedClient} method. */
export interface CallOptions {
  /**
   * Deadline in ms from the call's start: the whole unary call, or the whole server stream.
   * Default: the client's `defaultTimeoutMs`. Bidi calls have none (see openBidiCall).
   */
  readonly timeoutMs?: number;
  /** Aborting cancels the call; the caller then gets CANCELLED (or the stream just ends). */
  readonly signal?: AbortSignal;
}

/** What createTypedClient needs of a ts-proto method definition. */
interface AnyMethod {
  readonly path: string;
  readonly requestStream: boolean;
  readonly responseStream: boolean;
  readonly requestSerialize: (value: never) => Buffer;
  readonly responseDeserialize: (bytes: Buffer) => unknown;
}

/** The async method a ts-proto method definition becomes in a {@link TypedClient}. */
export type TypedMethod<M> =
  M extends MethodDefinition<infer Req, infer Res>
    ? M extends { readonly requestStream: false; readonly responseStream: false }
      ? (request: Req, options?: CallOptions) => Promise<Res>
      : M extends { readonly requestStream: false; readonly responseStream: true }
        ? (request: Req, options?: CallOptions) => AsyncGenerator<Res>
        : M extends { readonly requestStream: true; readonly responseStream: true }
          ? (options?: { readonly signal?: AbortSignal }) => BidiCall<Req, Res>
          : never
    : never;

/**
 * A client whose methods are the service's, async (nice-grpc style): unary → Promise, server
 * stream → async iterable, bidi → {@link BidiCall}. Every unary and server-stream call has a
 * deadline, every call an optional AbortSignal, and every error is an MsbError naming the
 * service. `close()` closes the channel.
 */
export type TypedClient<S> = { readonly [K in keyof S]: TypedMethod<S[K]> } & {
  close(): void;
};

export interface TypedClientOptions {
  /** Names the peer in errors ("image service", "vmm-agent"). */
  readonly service: string;
  /** Deadline of a call that sets none. */
  readonly defaultTimeoutMs: number;
  /** grpc-js channel options (message size limits, …). */
  readonly channelOptions?: ChannelOptions;
}

/**
 * Turns a ts-proto service definition (`ImageServiceService`, `VmmServiceService`) into a
 * {@link TypedClient} on `address` (`unix:/path` or `host:port`), so callers stop binding
 * callback methods: `await client.getImage({ reference })`,
 * `for await (const m of client.pullImage(req, { signal }))`.
 */
export function createTypedClient<S extends Record<string, AnyMethod>>(
  definition: S,
  address: string,
  options: TypedClientOptions,
): TypedClient<S> {
  const client = new Client(address, createGrpcChannelCredentials(), options.channelOptions);
  const { service } = options;
  const deadline = (o: CallOptions | undefined) => ({
    deadline: new Date(Date.now() + (o?.timeoutMs ?? options.defaultTimeoutMs)),
  });
  const methods: Record<string, unknown> = { close: () => client.close() };
  for (const [name, method] of Object.entries(definition)) {
    const { path, responseDeserialize } = method;
    // The definition's own serializer, for its own request type (checked by TypedMethod).
    const requestSerialize = method.requestSerialize as (value: unknown) => Buffer;
    if (!method.requestStream && !method.responseStream) {
      methods[name] = (request: unknown, o?: CallOptions) =>
        callUnary(
          service,
          (req: unknown, metadata, callOptions, callback) =>
            client.makeUnaryRequest(
              path,
              requestSerialize,
              responseDeserialize,
              req,
              metadata,
              callOptions,
              callback,
            ),
          request,
          {
            timeoutMs: o?.timeoutMs ?? options.defaultTimeoutMs,
            ...(o?.signal ? { signal: o.signal } : {}),
          },
        );
    } else if (!method.requestStream) {
      methods[name] = (request: unknown, o?: CallOptions) =>
        readServerStream(
          service,
          client.makeServerStreamRequest(
            path,
            requestSerialize,
            responseDeserialize,
            request,
            new Metadata(),
            deadline(o),
          ),
          o?.signal,
        );
    } else if (method.responseStream) {
      methods[name] = (o?: { signal?: AbortSignal }) =>
        openBidiCall(
          service,
          client.makeBidiStreamRequest(path, requestSerialize, responseDeserialize),
          o?.signal,
        );
    }
  }
  return methods as TypedClient<S>;
}
