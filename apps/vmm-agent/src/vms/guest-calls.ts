import { createReplSession, type ProcessHandle, type ReplLanguage } from "@msb/agent-protocol";
import { MsbError } from "@msb/errors";
import { createAsyncQueue } from "../async-queue.js";
import { parseEnv } from "../guest/env.js";
import type {
  ExecEvent,
  ExecParams,
  GuestAccess,
  RunCodeEvent,
  RunCodeParams,
  VmMetricsInfo,
} from "./types.js";
import {
  AGENT_CALL_TIMEOUT_MS,
  DEFAULT_READ_CAP_BYTES,
  EXEC_WATCHDOG_GRACE_MS,
  REPL_LANGUAGES,
  createCap,
  find,
  invalid,
  running,
  translate,
  type VmContext,
} from "./vm-table.js";

// Calls that reach a running VM's guest agent: metrics, commands, REPL cells, signals, files.

export async function metrics(
  ctx: VmContext,
  vmId: string,
  signal: AbortSignal,
): Promise<VmMetricsInfo> {
  const rec = find(ctx, vmId);
  const host = (await rec.process?.hostRssBytes()) ?? 0;
  if (rec.state !== "running" || rec.client === undefined) {
    return {
      vmId,
      running: false,
      cpuUsagePercent: 0,
      memoryUsedBytes: 0,
      memoryTotalBytes: 0,
      diskUsedBytes: 0,
      diskTotalBytes: 0,
      hostRssBytes: host,
    };
  }
  try {
    const m = await rec.client.metrics({ signal, timeoutMs: AGENT_CALL_TIMEOUT_MS });
    return {
      vmId,
      running: true,
      cpuUsagePercent: m.cpuPct,
      memoryUsedBytes: m.memUsedBytes,
      memoryTotalBytes: m.memTotalBytes,
      diskUsedBytes: m.diskUsedBytes,
      diskTotalBytes: m.diskTotalBytes,
      hostRssBytes: host,
    };
  } catch (err) {
    throw await translate(rec, err);
  }
}

export async function* exec(
  ctx: VmContext,
  params: ExecParams,
  signal: AbortSignal,
): AsyncIterable<ExecEvent> {
  const { rec, client } = running(ctx, params.vmId);
  if (params.command === "") throw invalid("command is required.");
  if (params.execId !== "" && rec.execs.has(params.execId)) {
    throw invalid(`exec_id '${params.execId}' is already running in VM '${rec.vmId}'.`);
  }
  const env = parseEnv(params.env, "env");
  const queue = createAsyncQueue<ExecEvent>();
  const cap = createCap(ctx);
  let handle: ProcessHandle;
  try {
    handle = await client.exec(
      {
        argv: [params.command, ...params.args],
        env,
        ...(params.workdir === "" ? {} : { cwd: params.workdir }),
        stdin: params.stdin.length > 0,
        timeoutMs: params.timeoutMs,
      },
      {
        signal,
        timeoutMs: AGENT_CALL_TIMEOUT_MS,
        onOutput: (chunk) => {
          const data = cap.take(chunk.data);
          if (data !== undefined) queue.push({ kind: "output", stream: chunk.stream, data });
        },
      },
    );
  } catch (err) {
    throw await translate(rec, err);
  }
  if (params.execId !== "") rec.execs.set(params.execId, handle);
  if (params.stdin.length > 0) {
    void handle
      .writeStdin(params.stdin)
      .then(() => handle.closeStdin())
      .catch(() => undefined);
  }
  // The guest enforces the timeout; this only catches a guest that stopped answering.
  const watchdog =
    params.timeoutMs > 0
      ? setTimeout(() => {
          void handle.kill().catch(() => undefined);
          queue.end(
            new MsbError(
              "AGENT_TIMEOUT",
              `The guest did not report the end of the command ${EXEC_WATCHDOG_GRACE_MS} ms after its timeout; the VM may be overloaded.`,
            ),
          );
        }, params.timeoutMs + EXEC_WATCHDOG_GRACE_MS)
      : undefined;
  handle.exit.then(
    (exit) => {
      queue.push({
        kind: "result",
        exitCode: exit.exitCode,
        signal: exit.signal ?? 0,
        timedOut: exit.timedOut,
        durationMs: exit.durationMs,
        truncated: cap.truncated,
      });
      queue.end();
    },
    (err: unknown) => {
      void translate(rec, err).then((e) => queue.end(e));
    },
  );
  let finished = false;
  try {
    for await (const event of queue) {
      if (event.kind === "result") finished = true;
      yield event;
    }
  } finally {
    clearTimeout(watchdog);
    if (rec.execs.get(params.execId) === handle) rec.execs.delete(params.execId);
    // The caller went away before the end: the process must not run on unobserved.
    if (!finished) void handle.kill().catch(() => undefined);
  }
}

export async function* runCode(
  ctx: VmContext,
  params: RunCodeParams,
  signal: AbortSignal,
): AsyncIterable<RunCodeEvent> {
  const { options } = ctx;
  const { rec, client } = running(ctx, params.vmId);
  const language = params.language as ReplLanguage;
  if (!REPL_LANGUAGES.includes(language)) {
    throw invalid(`language must be one of ${REPL_LANGUAGES.join(", ")}.`, {
      language: params.language,
    });
  }
  let session = rec.repls.get(language);
  if (session === undefined) {
    session = createReplSession(client, {
      language,
      ...(rec.workdir === "" ? {} : { cwd: rec.workdir }),
      maxOutputBytes: options.outputCapBytes,
    });
    rec.repls.set(language, session);
  }
  const queue = createAsyncQueue<RunCodeEvent>();
  const cap = createCap(ctx);
  const timeoutMs = params.timeoutMs > 0 ? params.timeoutMs : options.defaultRunTimeoutMs;
  session
    .run(params.code, {
      timeoutMs,
      signal,
      onOutput: ({ stream, text }) => {
        const data = cap.take(Buffer.from(text, "utf8"));
        if (data !== undefined) queue.push({ kind: "output", stream, data });
      },
    })
    .then(
      (result) => {
        // The interpreter "died" because the agent connection did (QEMU killed, guest
        // panic): that is the VM's death, not a REPL restart; report it as such.
        if (result.error?.type === "ReplDied" && client.closedReason !== undefined) {
          void translate(rec, client.closedReason).then((e) => queue.end(e));
          return;
        }
        queue.push({
          kind: "result",
          status: result.status,
          errorType: result.error?.type ?? "",
          errorMessage: result.error?.message ?? "",
          traceback: result.error?.traceback ?? "",
          truncated: cap.truncated || result.truncated,
          restarted: result.restarted,
          durationMs: result.durationMs,
        });
        queue.end();
      },
      (err: unknown) => {
        void translate(rec, err).then((e) => queue.end(e));
      },
    );
  yield* queue;
}

export function guest(ctx: VmContext, vmId: string): GuestAccess {
  const { rec, client } = running(ctx, vmId);
  return { client, translate: (err) => translate(rec, err) };
}

export async function signalProcess(
  ctx: VmContext,
  vmId: string,
  execId: string,
  sig: number,
): Promise<void> {
  const { rec } = running(ctx, vmId);
  const handle = rec.execs.get(execId);
  if (handle === undefined) {
    throw invalid(`No running exec '${execId}' in VM '${vmId}'.`, { vmId, execId });
  }
  if (!Number.isInteger(sig) || sig < 1 || sig > 64) throw invalid("signal must be 1-64.");
  try {
    await handle.signal(sig, { timeoutMs: AGENT_CALL_TIMEOUT_MS });
  } catch (err) {
    throw await translate(rec, err);
  }
}

export async function readFile(
  ctx: VmContext,
  vmId: string,
  path: string,
  maxBytes: number,
  signal: AbortSignal,
): Promise<{ data: Buffer; truncated: boolean }> {
  const { rec, client } = running(ctx, vmId);
  if (!path.startsWith("/")) throw invalid("path must be an absolute guest path.");
  try {
    const r = await client.readFile(path, {
      maxBytes: maxBytes > 0 ? maxBytes : DEFAULT_READ_CAP_BYTES,
      signal,
      timeoutMs: AGENT_CALL_TIMEOUT_MS,
    });
    return { data: r.data, truncated: r.truncated };
  } catch (err) {
    throw await translate(rec, err);
  }
}

export async function writeFile(
  ctx: VmContext,
  vmId: string,
  path: string,
  data: Buffer,
  { mode, createParents }: { mode: number; createParents: boolean },
  signal: AbortSignal,
): Promise<void> {
  const { rec, client } = running(ctx, vmId);
  if (!path.startsWith("/")) throw invalid("path must be an absolute guest path.");
  try {
    await client.writeFile(path, data, {
      mode: mode > 0 ? mode : 0o644,
      mkdirs: createParents,
      signal,
      timeoutMs: AGENT_CALL_TIMEOUT_MS,
    });
  } catch (err) {
    throw await translate(rec, err);
  }
}
