import { describe, expect, it } from "vitest";
import { renderImages } from "./images.js";
import {
  applyEvent,
  bar,
  createBarState,
  createLineRenderer,
  createProgressPrinter,
  renderBars,
  shortDigest,
  type ProgressEvent,
} from "./progress.js";

const L1 = `sha256:${"1".repeat(64)}`;
const L2 = `sha256:${"2".repeat(64)}`;

function ev(fields: Partial<ProgressEvent>): ProgressEvent {
  return {
    phase: "downloading",
    digest: "",
    current_bytes: 0,
    current_total_bytes: 0,
    done_bytes: 0,
    total_bytes: 0,
    done_items: 0,
    total_items: 0,
    message: "",
    ...fields,
  };
}

const pull: ProgressEvent[] = [
  ev({ phase: "resolving", message: "resolving docker.io/microsandbox/python:latest" }),
  ev({ digest: L1, current_bytes: 0, current_total_bytes: 2048, total_items: 2 }),
  ev({ digest: L1, current_bytes: 1024, current_total_bytes: 2048, total_items: 2 }),
  ev({ digest: L1, current_bytes: 2048, current_total_bytes: 2048, total_items: 2 }),
  ev({
    phase: "downloaded",
    digest: L1,
    current_bytes: 2048,
    current_total_bytes: 2048,
    done_items: 1,
    total_items: 2,
  }),
  ev({
    phase: "exists",
    digest: L2,
    current_bytes: 10,
    current_total_bytes: 10,
    done_items: 2,
    total_items: 2,
  }),
  ev({ phase: "done", message: "pulled docker.io/microsandbox/python:latest" }),
];

describe("progress without a terminal (one line per layer event)", () => {
  it("announces each layer once per phase and drops the byte ticks in between", () => {
    const line = createLineRenderer();
    const text = pull.map((e) => line(e) ?? "").join("");
    expect(text).toBe(
      [
        "resolving docker.io/microsandbox/python:latest",
        "downloading sha256:111111111111 0 B / 2.0 KiB (0/2)",
        "downloaded sha256:111111111111 2.0 KiB (1/2)",
        "exists sha256:222222222222 10 B (2/2)",
        "pulled docker.io/microsandbox/python:latest",
        "",
      ].join("\n"),
    );
  });

  it("prints build output lines as they are", () => {
    const line = createLineRenderer();
    expect(line(ev({ phase: "building", message: "Get:1 http://deb.debian.org bookworm" }))).toBe(
      "Get:1 http://deb.debian.org bookworm\n",
    );
    expect(line(ev({ phase: "cached", message: "using cached build /x" }))).toBe(
      "using cached build /x\n",
    );
  });
});

describe("progress on a terminal (bars)", () => {
  it("shows bytes of total per layer and the latest status", () => {
    const state = createBarState();
    for (const e of pull.slice(0, 3)) applyEvent(state, e);
    expect(renderBars(state)).toEqual([
      "sha256:111111111111  [##########----------] 1.0 KiB / 2.0 KiB  downloading",
      "resolving docker.io/microsandbox/python:latest",
    ]);
    for (const e of pull.slice(3)) applyEvent(state, e);
    expect(renderBars(state)).toEqual([
      "sha256:111111111111  [####################] 2.0 KiB / 2.0 KiB  downloaded",
      "sha256:222222222222  [####################] 10 B / 10 B  exists",
      "pulled docker.io/microsandbox/python:latest",
    ]);
  });

  it("redraws in place: moves the cursor back over the rows it drew", () => {
    const frames: string[] = [];
    const printer = createProgressPrinter((t) => frames.push(t), { tty: true });
    printer.update(pull[1]!);
    printer.update(pull[2]!);
    expect(frames[0]).not.toContain("\x1b[1F");
    expect(frames[1]!.startsWith("\x1b[1F\x1b[2K")).toBe(true);
    expect(frames[1]).toContain("1.0 KiB / 2.0 KiB");
  });

  it("an unknown total draws an empty bar", () => {
    expect(bar(5, 0, 4)).toBe("[----]");
    expect(bar(3, 4, 4)).toBe("[###-]");
    expect(shortDigest("sha256:abcdef0123456789")).toBe("sha256:abcdef012345");
  });
});

describe("msb images table", () => {
  it("shows reference, short digest, size and stored time", () => {
    expect(
      renderImages([
        {
          reference: "docker.io/microsandbox/python:latest",
          digest: L1,
          size_bytes: 3 * 1024 * 1024,
          stored_at: "2026-11-27T06:14:09.000Z",
        },
      ]),
    ).toBe(
      [
        "REFERENCE                             DIGEST               SIZE     STORED (UTC)",
        "docker.io/microsandbox/python:latest  sha256:111111111111  3.0 MiB  2026-11-27 06:14",
        "",
      ].join("\n"),
    );
    expect(renderImages([])).toContain("msb pull");
  });
});
