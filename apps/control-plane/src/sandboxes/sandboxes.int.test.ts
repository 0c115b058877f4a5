/* eslint-disable @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-return, @typescript-eslint/no-unsafe-call --
   These tests read parsed JSON bodies (`res.json()` is `any`); the matchers check their shape. */
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
