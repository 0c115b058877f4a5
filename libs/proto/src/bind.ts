import { lstat, mkdir, rm } from "node:fs/promises";
import { createConnection } from "node:net";
import { dirname } from "node:path";
import { ServerCredentials, type Server } from "@grpc/grpc-js";
import { MsbError } from "@msb/errors";

export interface BindGrpcServerOptions {
  /** The variable that sets the address, named in errors (`MSB_VMM_AGENT_ADDR`, …). */
  readonly addressSetting: string;
  /** Called after a socket file left by a dead process was removed. */
  readonly onStaleSocket?: (path: string) => void;
}

/** True when something accepts connections on the unix socket. */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ path });
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/**
 * Binds a grpc-js server to `unix:/path` or `host:port` the same way for every msb service:
 * the socket's directory is created (0700 when new), a socket file left by a dead process is
 * removed, and a socket someone still answers on, a path that is not a socket, or a taken
 * port are all PORT_IN_USE naming the address and the variable to change. Returns the bound
 * address (`host:0` becomes the real port).
 */
export async function bindGrpcServer(
  server: Server,
  address: string,
  options: BindGrpcServerOptions,
): Promise<string> {
  const taken = (why: string, cause?: unknown) =>
    new MsbError(
      "PORT_IN_USE",
      `Cannot listen on ${address}: ${why}. Stop the other process, or set ${options.addressSetting} to another address.`,
      { details: { address }, ...(cause === undefined ? {} : { cause }) },
    );
  if (address.startsWith("unix:")) {
    const path = address.slice("unix:".length).replace(/^\/\/(?=\/)/, "");
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    const st = await lstat(path).catch(() => undefined);
    if (st?.isSocket() === true) {
      if (await socketAnswers(path)) throw taken("another process serves it");
      await rm(path, { force: true });
      options.onStaleSocket?.(path);
    }
  }
  return new Promise((resolve, reject) => {
    server.bindAsync(address, ServerCredentials.createInsecure(), (err, port) => {
      if (err) reject(taken(err.message, err));
      else resolve(address.startsWith("unix:") ? address : address.replace(/:0$/, `:${port}`));
    });
  });
}
