import { mkdirSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { deriveServerSecret, verifyApiKey } from "@msb/keys";
import { runMsb } from "./testing/cli-harness.js";

describe("msb argument parsing", () => {
  it("rejects unknown flags and bad values with exit 2 and a pointer to --help", async () => {
    const bogus = await runMsb(["server", "start", "--bogus"]);
    expect(bogus.code).toBe(2);
    expect(bogus.stderr).toContain("unknown option '--bogus'");
    const port = await runMsb(["server", "start", "--port", "70000"]);
    expect(port.code).toBe(2);
    expect(port.stderr).toContain("between 1 and 65535");
    const tail = await runMsb(["server", "log", "--tail", "-3"]);
    expect(tail.code).toBe(2);
    const service = await runMsb(["server", "log", "--service", "nginx"]);
    expect(service.code).toBe(2);
    expect(service.stderr).toContain("control-plane");
  });

  it("prints help and version with exit 0", async () => {
    const help = await runMsb(["server", "--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/start[\s\S]*stop[\s\S]*status[\s\S]*keygen[\s\S]*log/);
    expect((await runMsb(["--version"])).code).toBe(0);
  });

  it("accepts global flags before or after the verb, and --home over MSB_HOME", async () => {
    const before = await runMsb(["--json", "--home", "/tmp/msb-none-a", "server", "stop"]);
    const after = await runMsb(["server", "stop", "--json", "--home", "/tmp/msb-none-b"]);
    expect(JSON.parse(before.stdout)).toMatchObject({
      status: "not-running",
      home: "/tmp/msb-none-a",
    });
    expect(JSON.parse(after.stdout)).toMatchObject({
      status: "not-running",
      home: "/tmp/msb-none-b",
    });
  });
});

describe("msb errors", () => {
  it("say what to do next, exit with the documented code, and show no stack without --debug", async () => {
    const status = await runMsb(["server", "status"]);
    expect(status.code).toBe(10);
    expect(status.stderr).toMatch(
      /^msb: msb server is not running for MSB_HOME .*; start it with `msb server start` \(add `--dev` only for a local server without API keys\)\.\n$/,
    );
    expect(status.stderr).not.toContain("    at ");
    const debug = await runMsb(["server", "status", "--debug"]);
    expect(debug.stderr).toContain("    at ");
  });

  it("do not suggest --dev for a stopped server that required API keys", async () => {
    const home = mkdtempSync(join(tmpdir(), "msb-stopped-"));
    mkdirSync(join(home, "run"));
    // The lock of an authenticated server on port 6000 whose supervisor is gone.
    writeFileSync(
      join(home, "run", "server.lock"),
      JSON.stringify({
        pid: 999_999,
        startTime: "1",
        startedAt: "2026-01-01T00:00:00.000Z",
        url: "http://127.0.0.1:6000",
        host: "127.0.0.1",
        port: 6000,
        dev: false,
        services: {},
      }),
    );
    const status = await runMsb(["server", "status", "--home", home]);
    expect(status.code).toBe(10);
    expect(status.stderr).toContain("`msb server start --port 6000` as it was last started");
    expect(status.stderr).not.toContain("--dev");
  });

  it("are one JSON object on stderr with --json", async () => {
    const status = await runMsb(["server", "status", "--json"]);
    expect(status.code).toBe(10);
    expect(status.stdout).toBe("");
    expect(JSON.parse(status.stderr)).toMatchObject({ error: { code: "SERVER_NOT_RUNNING" } });
  });

  it("maps connection refused from MSB_SERVER_URL to SERVER_NOT_RUNNING with the URL", async () => {
    const status = await runMsb(["server", "status"], {
      env: { MSB_SERVER_URL: "http://127.0.0.1:9" },
    });
    expect(status.code).toBe(10);
    expect(status.stderr).toContain(
      "msb server is not running at http://127.0.0.1:9; start it with `msb server start --dev`",
    );
  });
});

describe("msb server stop", () => {
  it("is idempotent: no server → exit 0 and says so", async () => {
    const stop = await runMsb(["server", "stop"]);
    expect(stop.code).toBe(0);
    expect(stop.stdout).toContain("msb server is not running");
  });
});

describe("msb server keygen", () => {
  it("prints a key signed with server.key, bound to the namespace, with its expiry", async () => {
    const now = Date.now();
    const out = await runMsb([
      "server",
      "keygen",
      "--expire",
      "24h",
      "--namespace",
      "production",
      "--json",
    ]);
    expect(out.code).toBe(0);
    const result = JSON.parse(out.stdout) as { key: string; namespace: string; expiresAt: string };
    expect(result.namespace).toBe("production");
    const secret = readFileSync(join(out.home, "server.key"), "utf8").trim();
    const verified = verifyApiKey(secret, result.key);
    expect(verified.namespace).toBe("production");
    expect(Date.parse(result.expiresAt)).toBe(verified.expiresAt);
    expect(verified.expiresAt! - now).toBeGreaterThanOrEqual(24 * 3_600_000);
  });

  it("prints only the key on stdout for people, for KEY=$(msb server keygen)", async () => {
    const out = await runMsb(["server", "keygen"]);
    expect(out.stdout).toMatch(/^msb_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\n$/);
    expect(out.stderr).toContain("all namespaces, no expiry");
  });

  it("signs with --key the way `server start --key` derives the secret", async () => {
    const out = await runMsb(["server", "keygen", "--key", "mySecretKey123", "--json"]);
    const { key } = JSON.parse(out.stdout) as { key: string };
    expect(verifyApiKey(deriveServerSecret("mySecretKey123"), key).namespace).toBe("*");
  });

  it("rejects a bad duration or namespace with exit 2 and the accepted forms", async () => {
    const expire = await runMsb(["server", "keygen", "--expire", "tomorrow"]);
    expect(expire.code).toBe(2);
    expect(expire.stderr).toContain("24h");
    const ns = await runMsb(["server", "keygen", "--namespace", "bad name!"]);
    expect(ns.code).toBe(2);
  });
});
