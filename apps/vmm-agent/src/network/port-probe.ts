import { createSocket } from "node:dgram";
import { createServer } from "node:net";
import { MsbError } from "@msb/errors";

/** A host port a VM's user-mode network will bind for a forward. */
export interface HostPortSpec {
  readonly protocol: "tcp" | "udp";
  readonly hostAddress: string;
  readonly hostPort: number;
}

function bindOnce(spec: HostPortSpec): Promise<NodeJS.ErrnoException | undefined> {
  return new Promise((resolve) => {
    if (spec.protocol === "udp") {
      const socket = createSocket(spec.hostAddress.includes(":") ? "udp6" : "udp4");
      socket.once("error", (err) => {
        socket.close();
        resolve(err);
      });
      socket.bind({ port: spec.hostPort, address: spec.hostAddress, exclusive: true }, () =>
        socket.close(() => resolve(undefined)),
      );
      return;
    }
    const server = createServer();
    server.once("error", (err: NodeJS.ErrnoException) => resolve(err));
    server.listen({ port: spec.hostPort, host: spec.hostAddress, exclusive: true }, () =>
      server.close(() => resolve(undefined)),
    );
  });
}

/**
 * Binds each forwarded host port once and lets it go, so that a port another process holds
 * is refused with PORT_IN_USE naming it before any VM starts (QEMU's slirp would only fail
 * after the VM is up, as a lost guest connection). A port freed and taken again in between
 * still fails at QEMU's own bind.
 */
export async function probeHostPorts(ports: readonly HostPortSpec[]): Promise<void> {
  for (const spec of ports) {
    if (spec.hostPort === 0) continue;
    const err = await bindOnce(spec);
    if (err === undefined) continue;
    if (err.code === "EADDRINUSE" || err.code === "EACCES") {
      throw new MsbError(
        "PORT_IN_USE",
        `Host port ${spec.hostPort}/${spec.protocol} on ${spec.hostAddress} is ${err.code === "EACCES" ? "not available to the server" : "already in use by another process"}. Pick another host port or stop what uses it.`,
        {
          details: {
            hostPort: spec.hostPort,
            protocol: spec.protocol,
            hostAddress: spec.hostAddress,
          },
        },
      );
    }
    throw new MsbError(
      "INVALID_PARAMS",
      `Host port ${spec.hostPort}/${spec.protocol} on ${spec.hostAddress} cannot be bound (${err.code ?? err.message}); check the host address.`,
      { details: { hostPort: spec.hostPort, hostAddress: spec.hostAddress } },
    );
  }
}
