import { describe, expect, it } from "vitest";
import { createFakeProcessTable } from "./testing/fake-process-table.js";
import { findPortHolder, parseProcNetTcp, portInUseError } from "./port-owner.js";

// Real lines: 127.0.0.1:5555 listening (inode 31337), an established connection from it,
// 0.0.0.0:22 listening.
const TCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:15B3 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 31337 1 0000000000000000 100 0 0 10 0
   1: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1200 1 0000000000000000 100 0 0 10 0
   2: 0100007F:15B3 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 40404 1 0000000000000000 20 4 30 10 -1
`;
const TCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5150 1 0000000000000000 100 0 0 10 0
`;

describe("parseProcNetTcp", () => {
  it("lists listening sockets with decoded address, port and inode, skipping other states", () => {
    expect(parseProcNetTcp(TCP)).toEqual([
      { address: "127.0.0.1", port: 5555, inode: "31337" },
      { address: "0.0.0.0", port: 22, inode: "1200" },
    ]);
    expect(parseProcNetTcp(TCP6)).toEqual([{ address: "::1", port: 8080, inode: "5150" }]);
    expect(parseProcNetTcp("")).toEqual([]);
  });
});

describe("findPortHolder", () => {
  const readNetTcp = () => [TCP, TCP6];

  it("finds the process whose fd is the listening socket, and its MSB_HOME when it is msb", () => {
    const { table } = createFakeProcessTable({
      10: { startTime: "1", argv: ["sleep", "1"], fds: ["/dev/null", "socket:[1200]"] },
      20: {
        startTime: "2",
        argv: ["node", "/opt/msb/apps/control-plane/dist/main.js"],
        env: { MSB_HOME: "/home/u/.msb" },
        fds: ["socket:[40404]", "socket:[31337]"],
      },
    });
    expect(findPortHolder(5555, { table, readNetTcp })).toEqual({
      port: 5555,
      pid: 20,
      command: "node /opt/msb/apps/control-plane/dist/main.js",
      msbHome: "/home/u/.msb",
    });
    expect(findPortHolder(8080, { table, readNetTcp, uid: 1000 })).toEqual({ port: 8080 });
    expect(findPortHolder(9999, { table, readNetTcp })).toBeUndefined();
  });

  it("finds the owner of a socket bound to the port but not listening", () => {
    // 127.0.0.1:6000 bound (state 07, TCP_CLOSE) by pid 30, never listen()ed.
    const bound = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1770 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 6060 1 0000000000000000 100 0 0 10 0
`;
    const { table } = createFakeProcessTable({
      30: { startTime: "3", argv: ["python3", "bind.py"], fds: ["socket:[6060]"] },
    });
    expect(findPortHolder(6000, { table, readNetTcp: () => [bound, ""] })).toEqual({
      port: 6000,
      pid: 30,
      command: "python3 bind.py",
    });
  });

  it("as root, does not blame visibility for a holder it cannot find", () => {
    const { table } = createFakeProcessTable({});
    const holder = findPortHolder(8080, { table, readNetTcp, uid: 0 });
    const err = portInUseError(holder ?? { port: 8080 });
    expect(err.message).not.toContain("not visible to this user");
    expect(err.message).toContain("ss -tanp");
  });

  it("words PORT_IN_USE with the holder and both ways out", () => {
    const msb = portInUseError({ port: 5555, pid: 20, command: "node x", msbHome: "/h" });
    expect(msb.code).toBe("PORT_IN_USE");
    expect(msb.message).toContain("pid 20 (node x)");
    expect(msb.message).toContain("msb server stop --home /h");
    expect(msb.message).toContain("--port");
    const other = portInUseError({ port: 80, pid: 5, command: "nginx" });
    expect(other.message).toContain("kill 5");
    const unknown = portInUseError({ port: 80 });
    expect(unknown.message).toContain("not visible");
  });
});
