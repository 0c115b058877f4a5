import { MsbError, type ErrorCode } from "@msb/errors";
import type { Command } from "commander";
import type { CliDeps, GlobalOptions } from "../../cli/context.js";
import { globalOptions } from "../../cli/globals.js";
import { onInterrupt } from "../project/shared.js";
import { connectImages, type ImageClient } from "./client.js";
import { createProgressPrinter, type ProgressEvent } from "./progress.js";

/** What the image commands share: flags, a client, a progress sink and Ctrl-C. */
export interface ImageContext {
  readonly global: GlobalOptions;
  readonly client: ImageClient;
  /** Progress on stderr (bars on a terminal, lines otherwise); silent with --json. */
  readonly progress: (event: ProgressEvent) => void;
}

export async function imageContext(cmd: Command, deps: CliDeps): Promise<ImageContext> {
  const global = globalOptions(cmd, deps.env);
  const client = await connectImages(global, deps);
  const printer = createProgressPrinter((t) => deps.io.err(t), { tty: deps.io.isTty });
  return {
    global,
    client,
    progress: global.json ? () => undefined : (e) => printer.update(e),
  };
}

/** Runs `task` with a signal that aborts on SIGINT/SIGTERM (the server cancels the call). */
export async function interruptible<T>(task: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const interrupt = onInterrupt();
  try {
    return await task(interrupt.signal);
  } finally {
    interrupt.dispose();
  }
}

const NEXT_STEPS: Partial<Record<ErrorCode, string>> = {
  IMAGE_NOT_FOUND:
    "Next step: check the name and tag (`msb images` lists the local ones; for a registry, the repository must exist there).",
  IMAGE_REFERENCE_INVALID:
    "Next step: write it as [REGISTRY/]REPOSITORY[:TAG], e.g. microsandbox/python or 127.0.0.1:5000/team/app:1.",
  REGISTRY_AUTH_FAILED: "Next step: check the registry credentials of the image service.",
  AUTH_FORBIDDEN:
    "Next step: image commands need an all-namespaces key (`msb server keygen` without --namespace) in MSB_API_KEY.",
};

/** The server's error with a CLI next step added when its message has none. */
export function withNextStep(err: unknown): unknown {
  if (!(err instanceof MsbError)) return err;
  const hint = NEXT_STEPS[err.code];
  if (hint === undefined || /next step/i.test(err.message)) return err;
  return new MsbError(err.code, `${err.message.replace(/\s*$/, "")} ${hint}`, {
    cause: err,
    details: err.details,
  });
}
