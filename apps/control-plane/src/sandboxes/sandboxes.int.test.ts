/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-return, @typescript-eslint/no-unsafe-call --
   These tests read parsed JSON bodies (`res.json()` is `any`); the matchers check their shape. */
import { mkdir, rm, symlink } from "node:fs/promises";
import { join } from "node:path";
import { MsbError } from "@msb/errors";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { FakeVmmBackend, codeResult, execResult, out } from "../test-support/fakes.js";
import { createHarness, type Harness } from "../test-support/harness.js";

const PY = { image: "microsandbox/python", memory: 512, cpus: 1 };
const start = (sandbox = "sb", config: object = PY, namespace = "default") => ({
  sandbox,
  namespace,
  config,
});

describe("the sandbox JSON-RPC flow", () => {
  let h: Harness;
  beforeEach(async () => {
    h = await createHarness({ dev: true });
  });
  afterEach(async () => {
    await h.close();
  });

  it("starts, runs code and commands, reports metrics, stops", async () => {
    const started = await h.rpc("sandbox.start", start());
    expect(started.statusCode).toBe(200);
    expect(started.json()).toEqual({
      jsonrpc: "2.0",
      id: "1",
      result: "Sandbox sb started successfully",
    });
    const spec = h.vmm.created[0]!;
    expect(spec).toMatchObject({ vmId: "default/sb", memoryMib: 512, cpus: 1, hostname: "sb" });
    expect(spec.env).toEqual(["PATH=/usr/bin:/bin", "IMAGE_ENV=1"]);
    expect(h.store.get("default", "sb")?.state).toBe("running");

    h.vmm.runScript = () => [
      out("stdout", "Hello "),
      out("stderr", "warn\n"),
      out("stdout", "World!\nsecond line\n"),
      codeResult("success"),
    ];
    const run = await h.rpc("sandbox.repl.run", {
      sandbox: "sb",
      namespace: "default",
      language: "python",
      code: "print('Hello World!')",
    });
    expect(run.json().result).toEqual({
      status: "success",
      language: "python",
      output: [
        { stream: "stderr", text: "warn" },
        { stream: "stdout", text: "Hello World!" },
        { stream: "stdout", text: "second line" },
      ],
      has_error: false,
      truncated: false,
      restarted: false,
      duration_ms: 5,
    });

    const cmd = await h.rpc("sandbox.command.run", {
      sandbox: "sb",
      command: "echo",
      args: ["Hello", "World"],
    });
    expect(cmd.json().result).toMatchObject({
      command: "echo",
      args: ["Hello", "World"],
      exit_code: 0,
      success: true,
      output: [{ stream: "stdout", text: "echo Hello World" }],
    });

    const metrics = await h.rpc("sandbox.metrics.get", { namespace: "default", sandbox: "sb" });
    expect(metrics.json().result).toEqual({
      sandboxes: [
        {
          namespace: "default",
          name: "sb",
          running: true,
          cpu_usage: 12.35,
          memory_usage: 100,
          disk_usage: 4096,
          state: "running",
          reason: null,
          image: "microsandbox/python",
          start_kind: null,
          boot_ms: null,
          paused: false,
        },
      ],
    });

    const stopped = await h.rpc("sandbox.stop", { sandbox: "sb", namespace: "default" });
    expect(stopped.json().result).toBe("Sandbox sb stopped successfully");
    expect(h.vmm.stopped).toEqual(["default/sb"]);
    expect(h.store.get("default", "sb")?.state).toBe("stopped");

    const after = await h.rpc("sandbox.repl.run", { sandbox: "sb", language: "python", code: "1" });
    expect(after.statusCode).toBe(409);
    expect(after.json().error).toMatchObject({ code: -32004, data: { code: "SANDBOX_STOPPED" } });
    expect(after.json().error.message).toMatch(/sandbox stopped: stopped with sandbox\.stop/);
  });

  it("reports an exception truthfully: status error, traceback on stderr, error set", async () => {
    await h.rpc("sandbox.start", start());
    h.vmm.runScript = () => [
      out("stderr", "Traceback (most recent call last):\nZeroDivisionError: division by zero\n"),
      codeResult("error", {
        errorType: "ZeroDivisionError",
        errorMessage: "division by zero",
        traceback: "Traceback...",
      }),
    ];
    const res = await h.rpc("sandbox.repl.run", { sandbox: "sb", language: "python", code: "1/0" });
    expect(res.statusCode).toBe(200);
    expect(res.json().result).toMatchObject({
      status: "error",
      has_error: true,
      error: { type: "ZeroDivisionError", message: "division by zero" },
    });
    expect(res.json().result.output[1]).toEqual({
      stream: "stderr",
      text: "ZeroDivisionError: division by zero",
    });
  });

  it("reports a timeout as status timeout with a note, and passes the timeout on in ms", async () => {
    await h.rpc("sandbox.start", start());
    h.vmm.runScript = () => [out("stdout", "started\n"), codeResult("timeout")];
    const res = await h.rpc("sandbox.repl.run", {
      sandbox: "sb",
      language: "nodejs",
      code: "while(true){}",
      timeout: 2,
    });
    expect(h.vmm.runs.at(-1)).toMatchObject({ language: "node", timeoutMs: 2000 });
    const result = res.json().result;
    expect(result).toMatchObject({ status: "timeout", language: "nodejs", has_error: true });
    expect(result.output.at(-1)).toEqual({
      stream: "stderr",
      text: "msb: the cell did not finish within 2 s and was interrupted.",
    });
  });

  it("caps output, says so, and never drops the fact silently", async () => {
    await h.close();
    h = await createHarness({ dev: true, env: { MSB_OUTPUT_LIMIT_BYTES: "1024" } });
    await h.rpc("sandbox.start", start());
    h.vmm.runScript = () => [out("stdout", "y\n".repeat(5000)), codeResult("success")];
    const res = await h.rpc("sandbox.repl.run", { sandbox: "sb", language: "python", code: "x" });
    const result = res.json().result;
    expect(result.truncated).toBe(true);
    expect(result.output.filter((l: { stream: string }) => l.stream === "stdout")).toHaveLength(
      512,
    );
    expect(result.output.at(-1).text).toMatch(/output truncated: only the first 1024 bytes/);
  });

  it("turns a command timeout into a TIMEOUT error carrying the output so far", async () => {
    await h.rpc("sandbox.start", start());
    h.vmm.execScript = () => [
      out("stdout", "tick\n"),
      execResult(-1, { timedOut: true, signal: 9 }),
    ];
    const res = await h.rpc("sandbox.command.run", {
      sandbox: "sb",
      command: "sleep",
      args: ["10"],
      timeout: 1,
    });
    expect(res.json().error).toMatchObject({
      code: -32030,
      data: { code: "TIMEOUT", output: [{ stream: "stdout", text: "tick" }] },
    });
  });

  it("reports a failing command as a result, not an error", async () => {
    await h.rpc("sandbox.start", start());
    h.vmm.execScript = () => [out("stderr", "ls: /nope: No such file\n"), execResult(2)];
    const res = await h.rpc("sandbox.command.run", {
      sandbox: "sb",
      command: "ls",
      args: ["/nope"],
    });
    expect(res.json().result).toMatchObject({ exit_code: 2, success: false });
  });

  it("refuses a timeout above the server's maximum", async () => {
    await h.rpc("sandbox.start", start());
    const res = await h.rpc("sandbox.repl.run", {
      sandbox: "sb",
      language: "python",
      code: "1",
      timeout: 999_999,
    });
    expect(res.json().error.data.issues[0].field).toBe("timeout");
  });

  it("answers -32004 for a sandbox that does not exist", async () => {
    for (const [method, params] of [
      ["sandbox.stop", { sandbox: "ghost" }],
      ["sandbox.repl.run", { sandbox: "ghost", language: "python", code: "1" }],
      ["sandbox.command.run", { sandbox: "ghost", command: "ls" }],
      ["sandbox.metrics.get", { sandbox: "ghost" }],
    ] as const) {
      const res = await h.rpc(method, params);
      expect(res.json().error, method).toMatchObject({
        code: -32004,
        data: { code: "SANDBOX_NOT_FOUND" },
      });
    }
  });

  it("is idempotent for the same config and refuses another config with -32005", async () => {
    expect((await h.rpc("sandbox.start", start())).statusCode).toBe(200);
    // Same config spelled differently (defaults left out) is the same sandbox.
    const again = await h.rpc("sandbox.start", start("sb", { image: "microsandbox/python" }));
    expect(again.json().result).toBe("Sandbox sb started successfully");
    expect(h.vmm.created).toHaveLength(1);
    const other = await h.rpc("sandbox.start", start("sb", { ...PY, memory: 1024 }));
    expect(other.statusCode).toBe(409);
    expect(other.json().error).toMatchObject({
      code: -32005,
      data: { code: "SANDBOX_EXISTS", differs: ["memory"] },
    });
  });

  it("boots one VM for concurrent starts of one name", async () => {
    let open!: () => void;
    h.vmm.bootGate = new Promise((resolve) => {
      open = resolve;
    });
    const starts = Array.from({ length: 5 }, () => h.rpc("sandbox.start", start()));
    await new Promise((resolve) => setImmediate(resolve));
    open();
    const results = await Promise.all(starts);
    expect(results.map((r) => r.json().result)).toEqual(
      Array(5).fill("Sandbox sb started successfully"),
    );
    expect(h.vmm.created).toHaveLength(1);
  });

  it("records an image failure as failed with its reason and returns its code", async () => {
    h.image.failWith = new MsbError(
      "IMAGE_NOT_FOUND",
      "No image nosuch/image:latest in the registry.",
    );
    const res = await h.rpc("sandbox.start", start("sb", { image: "nosuch/image" }));
    expect(res.json().error).toMatchObject({ code: -32010, data: { code: "IMAGE_NOT_FOUND" } });
    const record = h.store.get("default", "sb");
    expect(record).toMatchObject({ state: "failed", errorCode: "IMAGE_NOT_FOUND" });
    expect(record?.reason).toMatch(/No image nosuch/);
    const run = await h.rpc("sandbox.repl.run", { sandbox: "sb", language: "python", code: "1" });
    expect(run.json().error.message).toMatch(/sandbox stopped: No image nosuch/);
    // A failed sandbox can be started again once the cause is gone.
    h.image.failWith = undefined;
    expect((await h.rpc("sandbox.start", start())).json().result).toMatch(/started/);
  });

  it("records a boot failure, cleans up the VM, and returns the boot error's code", async () => {
    h.vmm.failCreateWith = new MsbError("VM_BOOT_FAILED", "QEMU exited: kernel panic.");
    const res = await h.rpc("sandbox.start", start());
    expect(res.json().error).toMatchObject({ code: -32021, data: { code: "VM_BOOT_FAILED" } });
    expect(h.store.get("default", "sb")).toMatchObject({
      state: "failed",
      errorCode: "VM_BOOT_FAILED",
    });
    expect(h.vmm.stopped).toEqual(["default/sb"]);
  });

  it("answers SERVICE_UNAVAILABLE when the vmm-agent is down", async () => {
    h.vmm.down = true;
    const res = await h.rpc("sandbox.start", start());
    expect(res.statusCode).toBe(503);
    expect(res.json().error).toMatchObject({ code: -32033, data: { code: "SERVICE_UNAVAILABLE" } });
  });

  it("marks a sandbox failed when its VM died under a run", async () => {
    await h.rpc("sandbox.start", start());
    h.vmm.failRunWith = new MsbError("VM_DIED", "The guest ran out of memory.");
    const res = await h.rpc("sandbox.repl.run", { sandbox: "sb", language: "python", code: "x" });
    expect(res.json().error.data.code).toBe("VM_DIED");
    expect(h.store.get("default", "sb")?.state).toBe("failed");
    h.vmm.failRunWith = undefined;
    const next = await h.rpc("sandbox.command.run", { sandbox: "sb", command: "ls" });
    expect(next.json().error.message).toMatch(/sandbox stopped: the VM stopped unexpectedly/);
  });

  it("keeps the scratch disk across stop/start of the same image", async () => {
    await h.rpc("sandbox.start", start());
    await h.rpc("sandbox.stop", { sandbox: "sb" });
    await h.rpc("sandbox.start", start());
    expect(h.vmm.created.map((s) => s.keepDisk)).toEqual([false, true]);
    // A stopped sandbox restarts with its stored config when none is given.
    await h.rpc("sandbox.stop", { sandbox: "sb" });
    expect((await h.rpc("sandbox.start", { sandbox: "sb" })).statusCode).toBe(200);
  });

  it("needs a config to create a sandbox", async () => {
    const res = await h.rpc("sandbox.start", { sandbox: "new" });
    expect(res.json().error.data.issues).toEqual([
      { field: "config", message: expect.stringMatching(/required to create a sandbox/) },
    ]);
  });

  it("writes and reads guest files in base64", async () => {
    await h.rpc("sandbox.start", start());
    const data = Buffer.from("héllo\n").toString("base64");
    const written = await h.rpc("sandbox.files.write", { sandbox: "sb", path: "/tmp/x", data });
    expect(written.json().result).toEqual({ path: "/tmp/x", size: 7 });
    const read = await h.rpc("sandbox.files.read", { sandbox: "sb", path: "/tmp/x", max_bytes: 3 });
    expect(read.json().result).toEqual({
      path: "/tmp/x",
      data: Buffer.from("hé").toString("base64"),
      encoding: "base64",
      size: 3,
      truncated: true,
    });
    const missing = await h.rpc("sandbox.files.read", { sandbox: "sb", path: "/nope" });
    expect(missing.json().error.data.code).toBe("FILE_NOT_FOUND");
    const bad = await h.rpc("sandbox.files.write", { sandbox: "sb", path: "rel", data: "!!" });
    expect(bad.json().error.data.issues.map((i: { field: string }) => i.field)).toEqual([
      "path",
      "data",
    ]);
    // The documented 16 MiB limit: above it a typed error names the field, never INTERNAL.
    const tooMuch = await h.rpc("sandbox.files.read", {
      sandbox: "sb",
      path: "/tmp/x",
      max_bytes: 16 * 1024 * 1024 + 1,
    });
    expect(tooMuch.json().error.data).toMatchObject({
      code: "INVALID_PARAMS",
      issues: [{ field: "max_bytes", message: expect.stringMatching(/at most .*16 MiB/) }],
    });
  });

  it("bounds every numeric input: a huge config.timeout is INVALID_PARAMS, not INTERNAL (uint32 overflow)", async () => {
    const huge = [4294968, 2 ** 53, 1e300];
    for (const timeout of huge) {
      const res = await h.rpc("sandbox.start", start("sb", { ...PY, timeout }));
      expect(res.json().error?.data, `timeout ${timeout}`).toMatchObject({
        code: "INVALID_PARAMS",
        issues: [{ field: "config.timeout" }],
      });
    }
    for (const [field, config] of [
      ["config.memory", { ...PY, memory: 1e300 }],
      ["config.cpus", { ...PY, cpus: 2 ** 53 }],
    ] as const) {
      const res = await h.rpc("sandbox.start", start("sb", config));
      expect(res.json().error?.data, field).toMatchObject({
        code: "INVALID_PARAMS",
        issues: [{ field }],
      });
    }
    expect(h.vmm.created).toHaveLength(0);
    await h.rpc("sandbox.start", start());
    for (const method of ["sandbox.repl.run", "sandbox.command.run"]) {
      const res = await h.rpc(method, {
        sandbox: "sb",
        language: "python",
        code: "1",
        command: "ls",
        timeout: 1e300,
      });
      expect(res.json().error?.data, method).toMatchObject({
        code: "INVALID_PARAMS",
        issues: [{ field: "timeout" }],
      });
    }
  });

  it("puts the request id of an INTERNAL error in error.data, also for one from a backend", async () => {
    await h.rpc("sandbox.start", start());
    for (const fault of [
      new Error("boom"),
      new MsbError("INTERNAL", "msb hit an internal fault in the vmm agent."),
    ]) {
      h.vmm.failRunWith = fault;
      const res = await h.rpc("sandbox.repl.run", { sandbox: "sb", language: "python", code: "1" });
      const requestId = res.headers["x-request-id"];
      expect(typeof requestId).toBe("string");
      expect(res.json().error.data).toMatchObject({ code: "INTERNAL", requestId });
      expect(res.json().error.message).toContain(String(requestId));
    }
  });

  it("stops idempotently", async () => {
    await h.rpc("sandbox.start", start());
    await h.rpc("sandbox.stop", { sandbox: "sb" });
    const again = await h.rpc("sandbox.stop", { sandbox: "sb" });
    expect(again.json().result).toBe("Sandbox sb stopped successfully");
  });
});

describe("periodic reconciliation while serving", () => {
  it("marks a running sandbox whose VM died failed with the vmm-agent's reason, leaves the others", async () => {
    const vmm = new FakeVmmBackend();
    const h = await createHarness({ dev: true, vmm });
    try {
      await h.rpc("sandbox.start", start("alive"));
      await h.rpc("sandbox.start", start("killed"));
      await h.rpc("sandbox.start", start("gone"));
      vmm.vms.set("default/killed", {
        ...vmm.vms.get("default/killed")!,
        status: "failed",
        reason: "QEMU exited unexpectedly (killed by SIGKILL).",
      });
      vmm.vms.delete("default/gone"); // its vmm-agent was restarted
      const report = await h.service.reconcile(AbortSignal.timeout(5_000), { live: true });
      expect(report.lost.sort()).toEqual(["default/gone", "default/killed"]);
      expect(h.store.get("default", "alive")?.state).toBe("running");
      expect(h.store.get("default", "killed")).toMatchObject({
        state: "failed",
        errorCode: "VM_DIED",
        reason: "the VM stopped unexpectedly: QEMU exited unexpectedly (killed by SIGKILL).",
      });
      expect(h.store.get("default", "gone")?.reason).toMatch(/vmm-agent no longer runs it/);
      const res = await h.rpc("sandbox.repl.run", {
        sandbox: "killed",
        language: "python",
        code: "1",
      });
      expect(res.json().error.code).toBe(-32004);
      expect(res.json().error.data.code).toBe("SANDBOX_STOPPED");
      expect(res.json().error.message).toMatch(
        /sandbox stopped: the VM stopped unexpectedly: QEMU/,
      );
    } finally {
      await h.close();
    }
  });
});

describe("reconciliation after a control-plane restart", () => {
  it("marks a sandbox whose VM is gone failed, and keeps one that still runs", async () => {
    const vmm = new FakeVmmBackend();
    const first = await createHarness({ dev: true, vmm });
    await first.rpc("sandbox.start", start("alive"));
    await first.rpc("sandbox.start", start("lost"));
    await first.close({ keepHome: true });

    vmm.vms.delete("default/lost"); // died while the control plane was down
    const second = await createHarness({ dev: true, vmm, home: first.home });
    try {
      const report = await second.service.reconcile(AbortSignal.timeout(5_000));
      expect(report.lost).toEqual(["default/lost"]);
      expect(second.store.get("default", "alive")?.state).toBe("running");
      expect(second.store.get("default", "lost")).toMatchObject({
        state: "failed",
        errorCode: "VM_DIED",
        reason: "VM lost while the control plane was down",
      });
      const res = await second.rpc("sandbox.repl.run", {
        sandbox: "lost",
        language: "python",
        code: "1",
      });
      expect(res.json().error.code).toBe(-32004);
      expect(res.json().error.message).toMatch(
        /sandbox stopped: VM lost while the control plane was down/,
      );
    } finally {
      await second.close();
    }
  });
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
