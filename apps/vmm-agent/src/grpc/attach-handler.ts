import { MsbError } from "@msb/errors";
import {
  OutputStream,
  bidiStreamHandler,
  type AttachRequest,
  type AttachResponse,
  type VmmServiceServer,
} from "@msb/proto";
import type { Logger } from "@msb/runtime";
import { attachProcess, type AttachInput } from "../attach.js";
import type { VmService } from "../vms/types.js";

/** Maps the requests after `start` to session inputs; a second `start` is refused. */
async function* inputsOf(rest: AsyncIterator<AttachRequest>): AsyncGenerator<AttachInput> {
  for (;;) {
    const next = await rest.next();
    if (next.done === true) return;
    const event = next.value.event;
    switch (event?.$case) {
      case "stdin":
        yield { kind: "stdin", data: event.value };
        break;
      case "resize":
        yield { kind: "resize", rows: event.value.rows, cols: event.value.cols };
        break;
      case "signal":
        yield { kind: "signal", signal: event.value };
        break;
      case "stdinEof":
        yield { kind: "eof" };
        break;
      case "start":
        throw new MsbError("INVALID_PARAMS", "Attach takes one start message, first.");
      case undefined:
        break;
    }
  }
}

/** The gRPC adapter of Attach: the first request must be `start`; the rest are inputs. */
export function createAttachHandler(
  service: VmService,
  logger: Logger,
): VmmServiceServer["attach"] {
  return bidiStreamHandler(logger, "Attach", async function* (requests, ctx) {
    const iterator = requests[Symbol.asyncIterator]();
    const first = await iterator.next();
    const start = first.done === true ? undefined : first.value.event;
    if (start?.$case !== "start") {
      throw new MsbError(
        "INVALID_PARAMS",
        "The first Attach message must be `start` (vm_id, command, …).",
      );
    }
    const s = start.value;
    const events = attachProcess(
      service.guest(s.vmId),
      {
        vmId: s.vmId,
        command: s.command,
        args: s.args,
        env: s.env,
        workdir: s.workdir,
        pty: s.pty === undefined ? undefined : { rows: s.pty.rows, cols: s.pty.cols },
      },
      inputsOf(iterator),
      ctx.signal,
    );
    for await (const event of events) {
      let message: AttachResponse;
      switch (event.kind) {
        case "started":
          message = { event: { $case: "started", value: { pid: event.pid } } };
          break;
        case "output":
          message = {
            event: {
              $case: "output",
              value: {
                stream:
                  event.stream === "stderr"
                    ? OutputStream.OUTPUT_STREAM_STDERR
                    : OutputStream.OUTPUT_STREAM_STDOUT,
                data: event.data,
              },
            },
          };
          break;
        case "exit":
          message = {
            event: {
              $case: "exit",
              value: {
                exitCode: event.exitCode,
                signal: event.signal,
                durationMs: event.durationMs,
              },
            },
          };
          break;
      }
      yield message;
    }
  });
}
