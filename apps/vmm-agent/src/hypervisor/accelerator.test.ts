import { describe, expect, it } from "vitest";
import { chooseAccelerator } from "./accelerator.js";

const never = (): Promise<void> => Promise.reject(new Error("must not be called"));

describe("chooseAccelerator", () => {
  it("honours MSB_ACCEL=tcg and kvm without probing", async () => {
    const tcg = await chooseAccelerator({ mode: "tcg", probeKvm: never, probeTimeoutMs: 1000 });
    expect(tcg.accelerator).toBe("tcg");
    expect(tcg.note).toContain("MSB_ACCEL");
    await expect(
      chooseAccelerator({ mode: "kvm", probeKvm: never, probeTimeoutMs: 1000 }),
    ).resolves.toEqual({ accelerator: "kvm", note: "" });
  });

  it("falls back to TCG when there is no KVM device", async () => {
    const choice = await chooseAccelerator({
      mode: "auto",
      kvmDevice: "/nonexistent/kvm",
      probeKvm: never,
      probeTimeoutMs: 1000,
    });
    expect(choice.accelerator).toBe("tcg");
    expect(choice.note).toContain("/nonexistent/kvm");
  });

  it("takes KVM when the probe guest boots and TCG with the reason when it does not", async () => {
    const device = "/dev/null"; // readable and writable: stands in for a usable /dev/kvm
    await expect(
      chooseAccelerator({
        mode: "auto",
        kvmDevice: device,
        probeKvm: () => Promise.resolve(),
        probeTimeoutMs: 1000,
      }),
    ).resolves.toEqual({ accelerator: "kvm", note: "" });
    const failed = await chooseAccelerator({
      mode: "auto",
      kvmDevice: device,
      probeKvm: () => Promise.reject(new Error("KVM internal error. Suberror: 1")),
      probeTimeoutMs: 1000,
    });
    expect(failed.accelerator).toBe("tcg");
    expect(failed.note).toContain("KVM internal error");
  });

  it("falls back when the probe guest hangs past the deadline", async () => {
    const choice = await chooseAccelerator({
      mode: "auto",
      kvmDevice: "/dev/null",
      probeKvm: (signal) =>
        new Promise((_, reject) =>
          signal.addEventListener("abort", () => reject(new Error("aborted"))),
        ),
      probeTimeoutMs: 50,
    });
    expect(choice.accelerator).toBe("tcg");
    expect(choice.note).toContain("50 ms");
  });
});
