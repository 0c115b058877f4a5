import { startRegistry, type TestRegistry } from "@msb/testing";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  freePort,
  msb,
  startDevServer,
  stopForeground,
  tempHome,
  type ForegroundServer,
} from "../server/harness.js";

// The image commands as a user runs them: the built CLI against `msb server start --dev` (a
// temp MSB_HOME; image builds come from the shared build cache) and a real registry.
describe("msb image commands (real server, real registry)", () => {
  const home = tempHome();
  let server: ForegroundServer;
  let registry: TestRegistry;
  let url = "";
  let closed = 0;
  const cli = (args: readonly string[]) => msb(home.path, args, { MSB_SERVER_URL: url });

  beforeAll(async () => {
    registry = await startRegistry();
    closed = await freePort();
    // Loopback registries are contacted only because the operator lists them.
    ({ server, url } = await startDevServer(home.path, [], {
      MSB_REGISTRIES: `${registry.host},127.0.0.1:${closed}`,
    }));
  });

  afterAll(async () => {
    await stopForeground(server);
    await registry.stop();
    home.remove();
  });

  it("images --json lists the default python image", async () => {
    const res = await cli(["images", "--json"]);
    expect(res.code, res.stderr).toBe(0);
    const { images } = JSON.parse(res.stdout) as {
      images: { reference: string; digest: string; size_bytes: number }[];
    };
    const python = images.find((i) => i.reference.includes("microsandbox/python"));
    expect(python?.digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(python?.size_bytes).toBeGreaterThan(0);

    const table = await cli(["images"]);
    expect(table.code, table.stderr).toBe(0);
    expect(table.stdout).toMatch(/^REFERENCE\s+DIGEST\s+SIZE/);
    expect(table.stdout).toContain("microsandbox/python");
  });

  it("build (cached) --push, rmi, then pull back from the registry with progress", async () => {
    const ref = `${registry.host}/microsandbox/python:latest`;
    const build = await cli(["build", "images/python", "--tag", ref, "--push", ref]);
    expect(build.code, build.stderr).toBe(0);
    expect(build.stdout).toContain(`built ${ref}`);
    expect(build.stdout).toContain(`pushed ${ref}`);
    // Build and push progress went to stderr, one line per event (not a terminal).
    expect(build.stderr).toMatch(/cached build|built /);

    const listed = await cli(["images"]);
    expect(listed.stdout).toContain(ref);

    const rmi = await cli(["rmi", ref]);
    expect(rmi.code, rmi.stderr).toBe(0);
    expect(rmi.stdout).toContain(`removed ${ref}`);
    expect((await cli(["images"])).stdout).not.toContain(ref);

    const pull = await cli(["pull", `${registry.host}/microsandbox/python`]);
    expect(pull.code, pull.stderr).toBe(0);
    expect(pull.stdout).toContain(`pulled ${ref}`);
    expect(pull.stderr).toContain("resolving");
    expect(pull.stderr).toMatch(/^(downloaded|exists) sha256:[0-9a-f]{12} /m);
    expect((await cli(["images"])).stdout).toContain(ref);

    const json = await cli(["pull", "--json", ref]);
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject({ reference: ref });
  });

  it("pull of a missing image exits 6 with IMAGE_NOT_FOUND and a next step", async () => {
    const res = await cli(["pull", `${registry.host}/nobody/nothing:1`]);
    expect(res.code).toBe(6);
    expect(res.stderr).toMatch(/next step/i);
    const json = await cli(["pull", "--json", `${registry.host}/nobody/nothing:1`]);
    expect(json.code).toBe(6);
    expect(JSON.parse(json.stderr)).toMatchObject({ error: { code: "IMAGE_NOT_FOUND" } });
  });

  it("pull from a listed closed port is REGISTRY_UNREACHABLE, from an unlisted one POLICY_DENIED", async () => {
    const res = await cli(["pull", "--json", `127.0.0.1:${closed}/microsandbox/python`]);
    expect(res.code).toBe(6);
    expect(JSON.parse(res.stderr)).toMatchObject({ error: { code: "REGISTRY_UNREACHABLE" } });
    const human = await cli(["pull", `127.0.0.1:${closed}/microsandbox/python`]);
    expect(human.stderr).toMatch(/cannot be reached.*check the address/i);
    const unlisted = await cli(["pull", "--json", `127.0.0.1:${await freePort()}/x/y`]);
    expect(JSON.parse(unlisted.stderr)).toMatchObject({ error: { code: "POLICY_DENIED" } });
    expect(unlisted.stderr).toContain("MSB_REGISTRIES");
  });

  it("rmi of an image that is not there exits 6", async () => {
    const res = await cli(["rmi", "nobody/nothing:1"]);
    expect(res.code).toBe(6);
    expect(res.stderr).toContain("msb:");
  });
});
