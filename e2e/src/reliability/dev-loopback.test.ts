import { connect } from "node:net";
import { networkInterfaces } from "node:os";
import { afterAll, describe, expect, it } from "vitest";
import {
  freePort,
  msb,
  startForeground,
  tempHome,
  type ForegroundServer,
} from "../server/harness.js";

/**
 * `msb server start --dev` turns authentication off, so it must not be reachable from other
 * machines: without --host it listens on loopback only. No VM is needed (--no-build).
 */

/** This machine's first non-loopback IPv4 address, if it has one. */
function externalIpv4(): string | undefined {
  for (const addresses of Object.values(networkInterfaces())) {
    for (const a of addresses ?? []) if (a.family === "IPv4" && !a.internal) return a.address;
  }
  return undefined;
}

/** Resolves with "connected" or the socket error code. */
function tryConnect(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    socket.setTimeout(10_000, () => {
      socket.destroy();
      resolve("timeout");
    });
    socket.once("connect", () => {
      socket.destroy();
      resolve("connected");
    });
    socket.once("error", (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

const external = externalIpv4();

describe("msb server start --dev without --host", () => {
  const home = tempHome();
  const servers: ForegroundServer[] = [];
  afterAll(async () => {
    await msb(home.path, ["server", "stop"]);
    for (const s of servers) if (s.child.exitCode === null) s.child.kill("SIGKILL");
    home.remove();
  });

  it.skipIf(external === undefined)(
    `is reachable on loopback and refuses connections to ${external ?? "(no non-loopback IPv4 on this machine)"}`,
    async () => {
      const port = await freePort();
      const server = startForeground(home.path, ["--dev", "--no-build", "--port", String(port)]);
      servers.push(server);
      await server.ready;
      const health = await fetch(`http://127.0.0.1:${port}/api/v1/health`);
      expect(health.status).toBe(200);
      expect(await tryConnect("127.0.0.1", port)).toBe("connected");
      expect(await tryConnect(external!, port)).toBe("ECONNREFUSED");

      // Control: the same address does connect when the operator asks for it with --host.
      await msb(home.path, ["server", "stop"]);
      const open = startForeground(home.path, [
        "--dev",
        "--no-build",
        "--port",
        String(port),
        "--host",
        "0.0.0.0",
      ]);
      servers.push(open);
      await open.ready;
      expect(await tryConnect(external!, port)).toBe("connected");
    },
  );
});
