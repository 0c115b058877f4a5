import { describe, expect, it } from "vitest";
import { volumeAllowed, volumeRootsFrom } from "./volume-policy.js";

describe("volume policy", () => {
  it("reads the roots like the control plane: unset is none, dev mode is $HOME and /tmp", () => {
    expect(volumeRootsFrom(undefined, false, "/home/u")).toEqual([]);
    expect(volumeRootsFrom(undefined, true, "/home/u")).toEqual(["/home/u", "/tmp"]);
    expect(volumeRootsFrom("/srv/a:/srv/b/../c:", true, "/home/u")).toEqual(["/srv/a", "/srv/c"]);
  });

  it("allows a root and what is inside it, never the denied dirs or their parents", () => {
    const policy = { roots: ["/srv"], denied: ["/srv/msb"] };
    expect(volumeAllowed("/srv/data", policy)).toBe(true);
    expect(volumeAllowed("/srv", policy)).toBe(false);
    expect(volumeAllowed("/srv/msb/sandboxes", policy)).toBe(false);
    expect(volumeAllowed("/srvx", policy)).toBe(false);
    expect(volumeAllowed("/etc", policy)).toBe(false);
  });
});
