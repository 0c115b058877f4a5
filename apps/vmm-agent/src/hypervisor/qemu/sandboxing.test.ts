import { describe, expect, it } from "vitest";
import { launcherCommand } from "./sandboxing.js";

describe("launcherCommand", () => {
  it("drops to the VM's uid, gid and groups with no capabilities and no_new_privs", () => {
    const [cmd, argv] = launcherCommand(
      "/usr/bin/setpriv",
      { uid: 1_900_000_007, gid: 1_900_000_001, groups: [1_900_000_000] },
      "/usr/bin/qemu-system-x86_64",
      ["-M", "microvm"],
    );
    expect(cmd).toBe("/usr/bin/setpriv");
    expect(argv).toEqual([
      "--reuid=1900000007",
      "--regid=1900000001",
      "--groups=1900000000",
      "--inh-caps=-all",
      "--bounding-set=-all",
      "--no-new-privs",
      "--pdeathsig",
      "KILL",
      "--",
      "/usr/bin/qemu-system-x86_64",
      "-M",
      "microvm",
    ]);
  });

  it("clears supplementary groups when none are given", () => {
    const [, argv] = launcherCommand("setpriv", { uid: 5, gid: 6, groups: [] }, "q", []);
    expect(argv).toContain("--clear-groups");
    expect(argv.some((a) => a.startsWith("--groups"))).toBe(false);
  });

  it("keeps only PDEATHSIG when QEMU runs as the server's user", () => {
    expect(launcherCommand("setpriv", undefined, "q", ["-x"])).toEqual([
      "setpriv",
      ["--pdeathsig", "KILL", "--", "q", "-x"],
    ]);
    expect(launcherCommand(undefined, undefined, "q", ["-x"])).toEqual(["q", ["-x"]]);
  });

  it("refuses to start a QEMU that must be unprivileged when setpriv is missing", () => {
    const codeOf = (fn: () => unknown): string => {
      try {
        fn();
      } catch (err) {
        return (err as { code?: string }).code ?? "no code";
      }
      return "no error";
    };
    expect(codeOf(() => launcherCommand(undefined, { uid: 5, gid: 6, groups: [] }, "q", []))).toBe(
      "VM_BOOT_FAILED",
    );
    expect(codeOf(() => launcherCommand("setpriv", { uid: -1, gid: 6, groups: [] }, "q", []))).toBe(
      "INVALID_PARAMS",
    );
  });
});
