import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createServer as createTcpServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Server } from "@grpc/grpc-js";
import { afterAll, describe, expect, it } from "vitest";
import { bindGrpcServer } from "./bind.js";

const dir = mkdtempSync(join(tmpdir(), "msb-bind-"));
const servers: Server[] = [];
const options = { addressSetting: "MSB_TEST_ADDR" };

function server(): Server {
  const s = new Server();
  servers.push(s);
  return s;
}

afterAll(() => {
  for (const s of servers) s.forceShutdown();
  rmSync(dir, { recursive: true, force: true });
});

describe("bindGrpcServer", () => {
  it("binds a unix socket, creating its directory 0700, and refuses a second live one", async () => {
    const address = `unix:${join(dir, "run", "a.sock")}`;
    expect(await bindGrpcServer(server(), address, options)).toBe(address);
    expect(statSync(join(dir, "run")).mode & 0o777).toBe(0o700);
    await expect(bindGrpcServer(server(), address, options)).rejects.toMatchObject({
      code: "PORT_IN_USE",
      message: expect.stringMatching(/another process serves it.*MSB_TEST_ADDR/) as unknown,
    });
  });

  it("takes over a socket file a dead process left, and says so", async () => {
    const path = join(dir, "stale.sock");
    // A process that binds and exits without unlinking leaves a dead socket file.
    execFileSync("python3", [
      "-c",
      `import socket; s = socket.socket(socket.AF_UNIX); s.bind(${JSON.stringify(path)})`,
    ]);
    expect(statSync(path).isSocket()).toBe(true);
    const stale: string[] = [];
    const bound = await bindGrpcServer(server(), `unix:${path}`, {
      ...options,
      onStaleSocket: (p) => stale.push(p),
    });
    expect(bound).toBe(`unix:${path}`);
    expect(stale).toEqual([path]);
  });

  it("never deletes a path that is not a socket", async () => {
    const path = join(dir, "file");
    writeFileSync(path, "keep me");
    await expect(bindGrpcServer(server(), `unix:${path}`, options)).rejects.toMatchObject({
      code: "PORT_IN_USE",
    });
    expect(statSync(path).isFile()).toBe(true);
  });

  it("returns the real port for :0 and refuses a taken TCP port", async () => {
    const bound = await bindGrpcServer(server(), "127.0.0.1:0", options);
    expect(bound).toMatch(/^127\.0\.0\.1:[1-9]\d*$/);
    const holder = createTcpServer();
    await new Promise<void>((resolve) => holder.listen(0, "127.0.0.1", resolve));
    const port = (holder.address() as { port: number }).port;
    try {
      await expect(bindGrpcServer(server(), `127.0.0.1:${port}`, options)).rejects.toMatchObject({
        code: "PORT_IN_USE",
        details: { address: `127.0.0.1:${port}` },
      });
    } finally {
      holder.close();
    }
  });
});
