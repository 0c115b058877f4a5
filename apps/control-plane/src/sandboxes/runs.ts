import { randomUUID } from "node:crypto";
import { MsbError } from "@msb/errors";
import type { ExecResultEvent, OutputStreamName, RunCodeResultEvent } from "./backends.js";
import type { ServiceContext } from "./context.js";
import { OutputCollector, type OutputLine } from "./output.js";
import type { RunObserver, SandboxService } from "./service-types.js";

/** `repl.run` and `command.run`: runs in a running sandbox, output collected under the cap. */
export function createRuns(ctx: ServiceContext): Pick<SandboxService, "runCode" | "runCommand"> {
  const { vmm, options, requireRunning, timeoutMsOf, guardRun } = ctx;
  return {
    async runCode(caller, params, signal, observer) {
      const record = requireRunning(caller, params.namespace, params.sandbox);
      const timeoutMs = timeoutMsOf(params.timeout);
      const language = params.language === "python" ? "python" : "node";
      observer?.onStart?.();
      const collector = new RunSink(options.outputLimitBytes, observer);
      let result: RunCodeResultEvent | undefined;
      await guardRun(record, async () => {
        const events = vmm.runCode(
          { vmId: record.vmId, language, code: params.code, timeoutMs },
          signal,
        );
        for await (const event of events) {
          if (event.type === "output") collector.push(event.stream, event.data);
          else result = event;
        }
      });
      if (result === undefined) throw noResult("RunCode");
      if (result.status === "timeout") {
        collector.note(
          "stderr",
          `msb: the cell did not finish within ${timeoutMs / 1000} s and was interrupted.`,
        );
      }
      if (result.restarted) {
        collector.note(
          "stderr",
          "msb: the REPL had to be restarted; variables and imports from earlier cells are gone.",
        );
      }
      const { output, truncated } = collector.finish(result.truncated);
      const error =
        result.status === "error"
          ? { type: result.errorType, message: result.errorMessage, traceback: result.traceback }
          : result.status === "timeout"
            ? {
                type: "Timeout",
                message: `did not finish within ${timeoutMs / 1000} s`,
                traceback: "",
              }
            : undefined;
      return {
        status: result.status,
        language: params.language,
        output,
        has_error: result.status !== "success",
        ...(error === undefined ? {} : { error }),
        truncated,
        restarted: result.restarted,
        duration_ms: result.durationMs,
      };
    },

    async runCommand(caller, params, signal, observer) {
      const record = requireRunning(caller, params.namespace, params.sandbox);
      const timeoutMs = timeoutMsOf(params.timeout);
      observer?.onStart?.();
      const collector = new RunSink(options.outputLimitBytes, observer);
      let result: ExecResultEvent | undefined;
      await guardRun(record, async () => {
        const events = vmm.exec(
          {
            vmId: record.vmId,
            execId: randomUUID(),
            command: params.command,
            args: params.args,
            timeoutMs,
          },
          signal,
        );
        for await (const event of events) {
          if (event.type === "output") collector.push(event.stream, event.data);
          else result = event;
        }
      });
      if (result === undefined) throw noResult("Exec");
      const { output, truncated } = collector.finish(result.truncated);
      if (result.timedOut) {
        // The original SDKs raise on a command timeout; an error (with the output so far) keeps them working.
        throw new MsbError(
          "TIMEOUT",
          `Command '${params.command}' did not finish within ${timeoutMs / 1000} s and was killed. Retry with a longer timeout.`,
          {
            details: {
              command: params.command,
              args: params.args,
              timeoutSeconds: timeoutMs / 1000,
              output,
              truncated,
            },
          },
        );
      }
      return {
        command: params.command,
        args: params.args,
        exit_code: result.exitCode,
        success: result.exitCode === 0 && result.signal === 0,
        output,
        signal: result.signal,
        truncated,
        duration_ms: result.durationMs,
      };
    },
  };
}

/**
 * Collects a run's output into lines (the result) and, when observed, passes the raw chunks
 * on as they arrive (streaming answers), both under the same cap. Notes of the server's own
 * (timeout, restart, truncation) go to both.
 */
class RunSink {
  readonly #collector: OutputCollector;
  readonly #limitBytes: number;
  readonly #observer: RunObserver | undefined;
  readonly #decoders = { stdout: new TextDecoder(), stderr: new TextDecoder() };

  constructor(limitBytes: number, observer: RunObserver | undefined) {
    this.#collector = new OutputCollector(limitBytes);
    this.#limitBytes = limitBytes;
    this.#observer = observer;
  }

  push(stream: OutputStreamName, data: Uint8Array): void {
    if (this.#observer?.onOutput !== undefined && !this.#collector.truncated) {
      const text = this.#decoders[stream].decode(data, { stream: true });
      if (text !== "") this.#observer.onOutput(stream, text);
    }
    this.#collector.push(stream, data);
  }

  note(stream: OutputStreamName, text: string): void {
    this.#observer?.onOutput?.(stream, `${text}\n`);
    this.#collector.note(stream, text);
  }

  finish(truncatedUpstream: boolean): { output: OutputLine[]; truncated: boolean } {
    const truncated = this.#collector.truncated || truncatedUpstream;
    if (truncated) {
      this.note(
        "stderr",
        `msb: output truncated: only the first ${this.#limitBytes} bytes were kept.`,
      );
    }
    return { output: this.#collector.finish().output, truncated };
  }
}

function noResult(call: string): MsbError {
  return new MsbError(
    "AGENT_PROTOCOL_ERROR",
    `The vmm-agent ended ${call} without a result. Retry; if it persists, stop and start the sandbox.`,
  );
}
