import { describe, expect, it } from "vitest";
import { MsbError, msbErrorFromWire, toJsonRpcError, toMsbError } from "./index.js";

describe("MsbError edges", () => {
  it("maps a not-found sandbox to the SPEC JSON-RPC code with the string code in data", () => {
    const err = new MsbError("SANDBOX_NOT_FOUND", "No sandbox 'x' in namespace 'default'.", {
      details: { sandbox: "x" },
    });
    expect(toJsonRpcError(err)).toEqual({
      code: -32004,
      message: "No sandbox 'x' in namespace 'default'.",
      data: { code: "SANDBOX_NOT_FOUND", sandbox: "x" },
    });
  });

  it("hides the cause of unknown faults and quotes the request id instead", () => {
    const err = toMsbError(new Error("ENOENT /secret/path"), "req-42");
    expect(err.code).toBe("INTERNAL");
    expect(err.message).toContain("req-42");
    expect(err.message).not.toContain("/secret/path");
    expect(toJsonRpcError(err).code).toBe(-32603);
  });

  it("keeps unknown wire codes from becoming new codes", () => {
    expect(msbErrorFromWire("NOT_A_CODE", "x").code).toBe("INTERNAL");
    expect(msbErrorFromWire("SANDBOX_EXISTS", "x", { a: 1 }).details).toEqual({ a: 1 });
  });
});
