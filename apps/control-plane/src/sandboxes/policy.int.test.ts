/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment --
   These tests read parsed JSON bodies (`res.json()` is `any`); the matchers check their shape. */
// Host resources and tenants (docs/api.md "Policy for host resources", docs/security.md):
// volumes, ports, network, memory, registries a namespace key may pull from, quotas.
import { mkdir, rm, symlink } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { createHarness } from "../test-support/harness.js";

const PY = { image: "microsandbox/python", memory: 512, cpus: 1 };
const start = (sandbox = "sb", config: object = PY, namespace = "default") => ({
  sandbox,
  namespace,
  config,
});

describe("host resource policy", () => {
  it("refuses volumes for remote callers unless roots are configured", async () => {
    const h = await createHarness();
    try {
      const res = await h.rpc("sandbox.start", start("sb", { ...PY, volumes: ["/etc:/data"] }), {
        key: h.key("*"),
      });
      expect(res.json().error).toMatchObject({ code: -32602, data: { code: "POLICY_DENIED" } });
      expect(res.json().error.message).toMatch(/allows no volume mounts .*MSB_VOLUME_ROOTS/);
    } finally {
      await h.close();
    }
  });

  it("allows volumes under a root, refuses escapes and the server's own home", async () => {
    const h = await createHarness({ dev: true });
    try {
      // In dev mode the (test) home directory is a root; MSB_HOME is <home>/.msb.
      await mkdir(join(h.home, "work"), { recursive: true });
      const ok = await h.rpc(
        "sandbox.start",
        start("a", { ...PY, volumes: [`${join(h.home, "work")}:/work:ro`] }),
      );
      expect(ok.statusCode).toBe(200);
      expect(h.vmm.created[0]?.volumes).toEqual([
        { hostPath: join(h.home, "work"), guestPath: "/work", readOnly: true },
      ]);
      await symlink("/etc", join(h.home, "work", "escape"));
      const escape = await h.rpc(
        "sandbox.start",
        start("b", { ...PY, volumes: [`${join(h.home, "work", "escape")}:/x`] }),
      );
      expect(escape.json().error.data.code).toBe("POLICY_DENIED");
      expect(escape.json().error.message).toMatch(/resolves to \/etc/);
      const relative = await h.rpc("sandbox.start", start("c", { ...PY, volumes: ["./data:/x"] }));
      expect(relative.json().error.data.code).toBe("INVALID_PARAMS");
      const outside = await h.rpc(
        "sandbox.start",
        start("d", { ...PY, volumes: ["/usr/share:/x"] }),
      );
      expect(outside.json().error.data.code).toBe("POLICY_DENIED");
      for (const own of [h.config.msbHome, h.home]) {
        const res = await h.rpc("sandbox.start", start("e", { ...PY, volumes: [`${own}:/x`] }));
        expect(res.json().error.data.code, own).toBe("POLICY_DENIED");
      }
    } finally {
      await h.close();
    }
  });

  it("re-checks the policy when a sandbox restarts with its stored config (volume swapped for a symlink)", async () => {
    const h = await createHarness({ dev: true });
    try {
      const shared = join(h.home, "shared");
      await mkdir(shared, { recursive: true });
      const first = await h.rpc(
        "sandbox.start",
        start("a", { ...PY, volumes: [`${shared}:/data`] }),
      );
      expect(first.statusCode).toBe(200);
      await h.rpc("sandbox.stop", { sandbox: "a" });
      // The attack: the allowed directory becomes a symlink to one outside the roots.
      await rm(shared, { recursive: true });
      await symlink("/etc", shared);
      const again = await h.rpc("sandbox.start", { sandbox: "a" });
      expect(again.json().error).toMatchObject({ data: { code: "POLICY_DENIED" } });
      expect(again.json().error.message).toMatch(/resolves to \/etc/);
      expect(h.vmm.created).toHaveLength(1);
    } finally {
      await h.close();
    }
  });

  it("re-checks memory, ports and network of a stored config against today's policy", async () => {
    const first = await createHarness({ env: { MSB_ALLOW_NETWORK_ANY: "1" } });
    const home = first.home;
    await first.rpc(
      "sandbox.start",
      start("a", { ...PY, memory: 2048, ports: ["20001:80"], network: "any" }),
      { key: first.key("default") },
    );
    await first.rpc("sandbox.stop", { sandbox: "a" }, { key: first.key("default") });
    expect(first.vmm.created).toHaveLength(1);
    await first.close({ keepHome: true });
    for (const [env, field] of [
      [{ MSB_ALLOW_NETWORK_ANY: "1", MSB_MAX_MEMORY_MIB: "1024" }, "config.memory"],
      [{ MSB_ALLOW_NETWORK_ANY: "1", MSB_PORT_RANGE: "30000-30010" }, "config.ports[0]"],
      [{}, "config.network"],
    ] as const) {
      const h = await createHarness({ home, env });
      try {
        const res = await h.rpc("sandbox.start", { sandbox: "a" }, { key: h.key("default") });
        expect(res.json().error, field).toMatchObject({ data: { code: "POLICY_DENIED", field } });
        expect(h.vmm.created).toHaveLength(0);
      } finally {
        await h.close({ keepHome: true });
      }
    }
    await rm(home, { recursive: true, force: true });
  });

  it("refuses volumes inside MSB_HOME and MSB_CACHE_DIR (shared kernel and agent)", async () => {
    const h = await createHarness({ dev: true });
    try {
      const cache = join(h.home, ".cache", "msb");
      await mkdir(join(cache, "kernel"), { recursive: true });
      await mkdir(join(h.config.msbHome, "sandboxes"), { recursive: true });
      for (const dir of [
        cache,
        join(cache, "kernel"),
        join(h.home, ".cache"),
        join(h.config.msbHome, "sandboxes"),
      ]) {
        const res = await h.rpc("sandbox.start", start("v", { ...PY, volumes: [`${dir}:/x`] }));
        expect(res.json().error?.data?.code, dir).toBe("POLICY_DENIED");
      }
      expect(h.vmm.created).toHaveLength(0);
    } finally {
      await h.close();
    }
  });

  it("lets a namespace key start only images present or from a registry allowed for it (no pull through sandbox.start)", async () => {
    const h = await createHarness();
    try {
      const key = h.key("team");
      // The SSRF: a loopback "registry" that only the server can reach.
      h.image.missing.add("127.0.0.1:9/x/y");
      const ssrf = await h.rpc(
        "sandbox.start",
        start("a", { ...PY, image: "127.0.0.1:9/x/y" }, "team"),
        { key },
      );
      expect(ssrf.json().error).toMatchObject({
        data: { code: "POLICY_DENIED", field: "config.image", registry: "127.0.0.1:9" },
      });
      expect(ssrf.json().error.message).toMatch(/MSB_NAMESPACE_PULL_REGISTRIES/);
      expect(h.image.pulled).toEqual([]);
      expect(h.vmm.created).toHaveLength(0);
      // Present images start; Docker Hub (the default allow-list for namespace keys) is pulled.
      const present = await h.rpc(
        "sandbox.start",
        start("b", { ...PY, image: "127.0.0.1:9/present" }, "team"),
        { key },
      );
      expect(present.statusCode).toBe(200);
      h.image.missing.add("library/node");
      const hub = await h.rpc(
        "sandbox.start",
        start("c", { ...PY, image: "library/node" }, "team"),
        {
          key,
        },
      );
      expect(hub.statusCode).toBe(200);
      expect(h.image.pulled).toEqual(["library/node"]);
      // An all-namespaces key is host-wide, as for image.pull: the image service's own
      // registry list decides.
      const admin = await h.rpc(
        "sandbox.start",
        start("d", { ...PY, image: "127.0.0.1:9/x/y" }, "team"),
        {
          key: h.key("*"),
        },
      );
      expect(admin.statusCode).toBe(200);
      expect(h.image.pulled).toEqual(["library/node", "127.0.0.1:9/x/y"]);
    } finally {
      await h.close();
    }
  });

  it("holds each namespace to its quotas (VMs, memory, sandboxes kept): one namespace cannot take the host", async () => {
    const h = await createHarness({
      dev: true,
      env: {
        MSB_NAMESPACE_MAX_VMS: "2",
        MSB_NAMESPACE_MAX_MEMORY_MIB: "1024",
        MSB_NAMESPACE_MAX_SANDBOXES: "3",
      },
    });
    try {
      const quota = (res: { json(): unknown }) =>
        (res.json() as { error?: { data?: Record<string, unknown> } }).error?.data;
      const ok = async (name: string, memory: number, namespace = "greedy") => {
        const res = await h.rpc("sandbox.start", start(name, { ...PY, memory }, namespace));
        expect(res.statusCode, name).toBe(200);
      };
      await ok("a", 512);
      // Memory: 512 + 768 > 1024.
      const memory = await h.rpc("sandbox.start", start("b", { ...PY, memory: 768 }, "greedy"));
      expect(quota(memory)).toMatchObject({ code: "QUOTA_EXCEEDED", quota: "memory" });
      await ok("b", 512);
      // VMs: a third running one.
      const vms = await h.rpc("sandbox.start", start("c", { ...PY, memory: 64 }, "greedy"));
      expect(quota(vms)).toMatchObject({ code: "QUOTA_EXCEEDED", quota: "vms" });
      expect(vms.json()).toMatchObject({
        error: { message: expect.stringMatching(/MSB_NAMESPACE_MAX_VMS/) },
      });
      // Sandboxes kept (stopped ones keep their disks): 3 at most.
      await h.rpc("sandbox.stop", { sandbox: "a", namespace: "greedy" });
      await h.rpc("sandbox.stop", { sandbox: "b", namespace: "greedy" });
      await ok("c", 64);
      await h.rpc("sandbox.stop", { sandbox: "c", namespace: "greedy" });
      const kept = await h.rpc("sandbox.start", start("d", { ...PY, memory: 64 }, "greedy"));
      expect(quota(kept)).toMatchObject({ code: "QUOTA_EXCEEDED", quota: "sandboxes" });
      // An existing one starts again, and other namespaces are not affected.
      await ok("a", 512);
      await ok("x", 1024, "other");
      const removed = await h.rpc("sandbox.stop", {
        sandbox: "c",
        namespace: "greedy",
        remove: true,
      });
      expect(removed.statusCode).toBe(200);
      await ok("d", 64);
    } finally {
      await h.close();
    }
  });

  it("allows port forwards only in the range and never the server's port", async () => {
    const h = await createHarness({
      dev: true,
      env: { MSB_PORT_RANGE: "20000-20010", MSB_PORT: "20005" },
    });
    try {
      const ok = await h.rpc("sandbox.start", start("a", { ...PY, ports: ["20001:80"] }));
      expect(ok.statusCode).toBe(200);
      for (const port of ["80:80", "20005:80", "30000:80"]) {
        const res = await h.rpc("sandbox.start", start("b", { ...PY, ports: [port] }));
        expect(res.json().error, port).toMatchObject({
          code: -32602,
          data: { code: "POLICY_DENIED" },
        });
        expect(res.json().error.message).toMatch(/20000-20010 except 20005/);
      }
    } finally {
      await h.close();
    }
  });
});
