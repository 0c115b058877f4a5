import { describe, expect, it } from "vitest";
import {
  AuthenticationError,
  CommandExecution,
  Execution,
  MicrosandboxError,
  SandboxExistsError,
  SandboxNotFoundError,
  TimeoutError,
  errorFromRpc,
  joinStream,
} from "./index.js";

const items = (...pairs: [string, string][]) => pairs.map(([stream, text]) => ({ stream, text }));

describe("output", () => {
  it("concatenates chunks that keep their own newlines", () => {
    const out = items(["stdout", "Hel"], ["stdout", "lo\nWor"], ["stdout", "ld\n"]);
    expect(joinStream(out, "stdout")).toBe("Hello\nWorld");
  });

  it("joins per-line items of the original server with newlines", () => {
    expect(joinStream(items(["stdout", "line 1"], ["stdout", "line 2"]), "stdout")).toBe(
      "line 1\nline 2",
    );
  });

  it("drops only trailing newlines", () => {
    expect(joinStream(items(["stdout", "  x  \n\n"]), "stdout")).toBe("  x  ");
  });

  it("reads an execution's streams and status", async () => {
    const exe = new Execution({
      status: "error",
      language: "python",
      output: items(["stdout", "a\n"], ["stderr", "Traceback\nZeroDivisionError\n"]),
    });
    expect(await exe.output()).toBe("a");
    expect(await exe.error()).toBe("Traceback\nZeroDivisionError");
    expect(exe.hasError()).toBe(true);
    expect(exe.language).toBe("python");
  });

  it("trusts status: a warning on stderr of a successful cell is no error", () => {
    expect(new Execution({ status: "success", output: items(["stderr", "w"]) }).hasError()).toBe(
      false,
    );
    expect(new Execution({ status: "timeout", output: [] }).hasError()).toBe(true);
    // Without a status, the original rule: stderr output means an error.
    expect(new Execution({ output: items(["stderr", "boom"]) }).hasError()).toBe(true);
  });

  it("tolerates malformed results", async () => {
    const exe = new Execution({ output: [{ stream: "stdout" }, "junk", { text: "x" }] });
    expect(await exe.output()).toBe("x");
    expect(new Execution(null).status).toBe("unknown");
  });

  it("reads a command's exit code and success", async () => {
    const res = new CommandExecution({
      command: "ls",
      args: ["/nope"],
      exit_code: 2,
      success: false,
      output: items(["stderr", "ls: cannot access '/nope'\n"]),
    });
    expect(res.exitCode).toBe(2);
    expect(res.success).toBe(false);
    expect(await res.error()).toBe("ls: cannot access '/nope'");
    expect(res.args).toEqual(["/nope"]);
    expect(new CommandExecution({ exit_code: 0 }).success).toBe(true);
    expect(new CommandExecution({}).exitCode).toBe(-1);
  });
});

describe("errorFromRpc", () => {
  it("picks the class from error.data.code and keeps code, rpcCode, message, request id", () => {
    const err = errorFromRpc({
      code: -32004,
      message: "Sandbox 'x' is stopped. Start it again with sandbox.start.",
      data: { code: "SANDBOX_STOPPED", requestId: "r-9" },
    });
    expect(err).toBeInstanceOf(SandboxNotFoundError);
    expect(err).toBeInstanceOf(MicrosandboxError);
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe("SANDBOX_STOPPED");
    expect(err.rpcCode).toBe(-32004);
    expect(err.requestId).toBe("r-9");
    expect(err.message).toContain("Start it again");
    expect(err.name).toBe("SandboxNotFoundError");
  });

  it("maps the documented families", () => {
    expect(
      errorFromRpc({ code: -32002, message: "m", data: { code: "AUTH_FORBIDDEN" } }),
    ).toBeInstanceOf(AuthenticationError);
    expect(
      errorFromRpc({ code: -32022, message: "m", data: { code: "VM_BOOT_TIMEOUT" } }),
    ).toBeInstanceOf(TimeoutError);
  });

  it("falls back to the numeric code, and to the base class for unknown codes", () => {
    const exists = errorFromRpc({ code: -32005, message: "exists", data: null });
    expect(exists).toBeInstanceOf(SandboxExistsError);
    expect(exists.code).toBe("SANDBOX_EXISTS");
    const novel = errorFromRpc({ code: -32099, message: "new", data: { code: "SOMETHING_NEW" } });
    expect(novel.constructor).toBe(MicrosandboxError);
    expect(novel.code).toBe("SOMETHING_NEW");
  });
});
