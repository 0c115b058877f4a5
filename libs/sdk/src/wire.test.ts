import type {
  OutputChunk,
  OutputEvent,
  SandboxMetrics as WireSandboxMetrics,
  StartDetails,
} from "@msb/wire";
import { describe, expectTypeOf, it } from "vitest";
import type { OutputItem, OutputCallback, SandboxMetrics } from "./index.js";

// The SDK is published without dependencies, so it keeps its own small client and types; they
// are held to the one wire contract (libs/wire) here, at type-check time (`tsc -p
// tsconfig.lint.json`, part of `npm test`): a wire change the SDK cannot read fails the check.
describe("the SDK's types read the wire's shapes", () => {
  it("output chunks and streamed output events", () => {
    expectTypeOf<OutputChunk>().toMatchTypeOf<OutputItem>();
    expectTypeOf<OutputEvent>().toMatchTypeOf<OutputItem>();
    expectTypeOf<[OutputEvent["stream"], string]>().toMatchTypeOf<Parameters<OutputCallback>>();
  });

  it("a sandbox's metrics", () => {
    expectTypeOf<WireSandboxMetrics>().toMatchTypeOf<SandboxMetrics>();
  });

  it("the start details the SDK reads by name", () => {
    expectTypeOf<StartDetails>().toHaveProperty("start_kind");
    expectTypeOf<StartDetails>().toHaveProperty("boot_ms");
  });
});
