import { ServerCredentials, type Server } from "@grpc/grpc-js";
import { mkdir, rm } from "node:fs/promises";
import { createConnection } from "node:net";
import { dirname } from "node:path";
import { MsbError } from "@msb/errors";

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
 * Binds a gRPC server to `unix:/path` or `host:port`. A unix socket left by a dead process is
 * removed first; one that still answers means another vmm-agent runs, which is refused.
 */
export async function bindGrpcServer(server: Server, address: string): Promise<string> {
  if (address.startsWith("unix:")) {
    const path = address.slice("unix:".length).replace(/^\/\/(?=\/)/, "");
    await mkdir(dirname(path), { recursive: true, mode: 0o700 });
    if (await socketAnswers(path)) {
      throw new MsbError(
        "SERVER_ALREADY_RUNNING",
        `Another process already serves ${address}. Stop it, or set MSB_VMM_AGENT_ADDR.`,
        { details: { address } },
      );
    }
    await rm(path, { force: true });
  }
  return new Promise((resolve, reject) => {
    server.bindAsync(address, ServerCredentials.createInsecure(), (err, port) => {
      if (err) {
        reject(
          new MsbError("PORT_IN_USE", `Could not listen on ${address}: ${err.message}.`, {
            details: { address },
            cause: err,
          }),
        );
        return;
      }
      resolve(address.startsWith("unix:") ? address : address.replace(/:0$/, `:${port}`));
    });
  });
}
