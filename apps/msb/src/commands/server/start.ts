import { spawn } from "node:child_process";
import { openSync, closeSync } from "node:fs";
import { Command, Option } from "commander";
import { MsbError, msbErrorFromWire } from "@msb/errors";
import { printJson, type CliDeps, type GlobalOptions } from "../../cli/context.js";
import { globalOptions } from "../../cli/globals.js";
import {
  takeOverStale,
  assertPortFree,
  deriveServerSecret,
  ensurePrereqs,
  formatLogEntry,
  msbPaths,
  type Prereqs,
  ensurePrivateDir,
  readLogTail,
  runServer,
  secretFromEnv,
  type ServerReady,
  type ServerSettings,
  WARN_LEVEL,
} from "@msb/supervisor";
import { parsePort } from "../../cli/parse.js";

/** Set in the environment of the supervisor that `--detach` spawns; it reports over IPC. */
export const DETACHED_ENV = "MSB_DETACHED_SUPERVISOR";

export interface StartOptions {
  readonly dev: boolean;
  readonly port: number;
  readonly host: string;
  readonly detach: boolean;
  readonly key?: string;
  readonly build: boolean;
}

/** Messages from a detached supervisor to the `msb server start --detach` that spawned it. */
type DetachMessage =
  | { readonly type: "ready"; readonly ready: ServerReady }
  | {
      readonly type: "error";
      readonly code: string;
      readonly message: string;
      readonly details: unknown;
    };

const DEFAULT_READY_TIMEOUT_MS = 120_000;

function readyTimeoutMs(env: NodeJS.ProcessEnv): number {
  const value = Number(env["MSB_SERVICE_READY_TIMEOUT_MS"]);
  return Number.isFinite(value) && value > 0 ? value : DEFAULT_READY_TIMEOUT_MS;
}

function describeReady(ready: ServerReady, detached: boolean): string {
  const lines = [
    `msb server ready at ${ready.url}${ready.dev ? " (dev mode: no authentication)" : " (API keys required: `msb server keygen`)"}`,
    `  accelerator: ${ready.accelerator ?? "unknown"}   pid: ${ready.pid}   MSB_HOME: ${ready.home}`,
    detached
      ? "  logs: `msb server log --follow`   stop: `msb server stop`"
      : "  logs: `msb server log --follow`   stop: Ctrl-C or `msb server stop`",
  ];
  if (!ready.pdeathsig)
    lines.push("  warning: setpriv not found; services may outlive a killed supervisor");
  return `${lines.join("\n")}\n`;
}

async function checkBeforeStart(
  settings: ServerSettings,
  options: StartOptions,
  global: GlobalOptions,
  deps: CliDeps,
): Promise<Prereqs> {
  const paths = msbPaths(global.home);
  // A dead server's services may still hold the port: take over what it left first.
  const takeover = await takeOverStale(deps.table, paths);
  if (takeover.killed.length > 0 && !global.json) {
    deps.io.err(
      `msb: took over from a server that is gone${takeover.stalePid === undefined ? "" : ` (pid ${takeover.stalePid})`}; killed its leftovers: ${takeover.killed.join(", ")}\n`,
    );
  }
  await assertPortFree(settings.host, settings.port, { table: deps.table });
  const prereqs = await ensurePrereqs(
    {
      root: deps.root,
      home: paths.home,
      env: deps.env,
      onProgress: (step, line) => {
        if (!global.json) deps.io.err(`[${step}] ${line.replace(/^\[\w+\]\s*/, "")}\n`);
      },
    },
    { build: options.build },
  );
  if (!global.json) for (const warning of prereqs.warnings) deps.io.err(`msb: note: ${warning}\n`);
  return prereqs;
}

/** Foreground: this process is the supervisor until Ctrl-C or `msb server stop`. */
async function runForeground(
  settings: ServerSettings,
  global: GlobalOptions,
  deps: CliDeps,
  report?: (message: DetachMessage) => void,
): Promise<void> {
  const { io } = deps;
  const quiet = report !== undefined;
  try {
    await runServer(
      settings,
      {
        paths: msbPaths(global.home),
        table: deps.table,
        env: deps.env,
        root: deps.root,
        node: deps.node,
        readyTimeoutMs: readyTimeoutMs(deps.env),
        onStale: (pid, killed) => {
          if (quiet) return;
          const what = killed.length > 0 ? `; killed its leftovers: ${killed.join(", ")}` : "";
          io.err(
            `msb: took over the lock of a server that is gone${pid === undefined ? "" : ` (pid ${pid})`}${what}\n`,
          );
        },
        onEvent: (event) => {
          if (quiet) return;
          if (event.type === "log" && event.entry.level >= WARN_LEVEL) {
            io.err(global.json ? `${event.entry.raw}\n` : `${formatLogEntry(event.entry)}\n`);
          } else if (event.type === "restarting" && !global.json) {
            io.err(
              `msb: ${event.service} crashed (${event.crashes} in a row); restarting in ${event.delayMs} ms\n`,
            );
          }
        },
        onReady: (ready) => {
          if (report !== undefined) report({ type: "ready", ready });
          else if (global.json) printJson(io, { status: "ready", ...ready });
          else io.out(describeReady(ready, false));
        },
      },
      (control) => {
        let signals = 0;
        const onSignal = (signal: NodeJS.Signals) => {
          signals += 1;
          if (signals === 1 && !quiet && !global.json)
            io.err(`\nmsb: ${signal}: stopping services (again to kill them now)\n`);
          control.stop(signal);
        };
        process.on("SIGINT", onSignal);
        process.on("SIGTERM", onSignal);
        process.on("SIGHUP", onSignal);
      },
    );
  } catch (err) {
    if (report !== undefined && err instanceof MsbError) {
      report({ type: "error", code: err.code, message: err.message, details: err.details });
    }
    throw err;
  }
}

/** `--detach`: spawn a supervisor in its own session, wait until it answers, print, exit. */
async function runDetached(
  settings: ServerSettings,
  options: StartOptions,
  prereqs: Prereqs,
  global: GlobalOptions,
  deps: CliDeps,
): Promise<void> {
  const paths = msbPaths(global.home);
  ensurePrivateDir(paths.logsDir);
  const logFile = paths.logOf("supervisor");
  const fd = openSync(logFile, "a", 0o600);
  const args = [
    deps.entry,
    "server",
    "start",
    "--home",
    paths.home,
    "--host",
    settings.host,
    "--port",
    String(settings.port),
    "--no-build",
    ...(settings.dev ? ["--dev"] : []),
  ];
  const env: NodeJS.ProcessEnv = {
    ...deps.env,
    [DETACHED_ENV]: "1",
    ...(settings.secret === undefined ? {} : { MSB_SERVER_KEY: settings.secret }),
    ...(prereqs.kernel === undefined ? {} : { MSB_KERNEL: prereqs.kernel }),
    ...(prereqs.initramfs === undefined ? {} : { MSB_INITRAMFS: prereqs.initramfs }),
  };
  const child = spawn(deps.node, args, { detached: true, env, stdio: ["ignore", fd, fd, "ipc"] });
  closeSync(fd);
  const outcome = await new Promise<DetachMessage | { type: "exit"; reason: string }>((resolve) => {
    child.once("message", (message) => resolve(message as DetachMessage));
    child.once("exit", (code, signal) =>
      resolve({
        type: "exit",
        reason: signal === null ? `exited with code ${code ?? "?"}` : `was killed by ${signal}`,
      }),
    );
    child.once("error", (err) =>
      resolve({ type: "exit", reason: `could not be spawned: ${err.message}` }),
    );
  });
  child.removeAllListeners();
  if (child.connected) child.disconnect();
  child.unref();
  switch (outcome.type) {
    case "ready":
      if (global.json) printJson(deps.io, { status: "ready", ...outcome.ready });
      else deps.io.out(describeReady(outcome.ready, true));
      return;
    case "error":
      throw msbErrorFromWire(outcome.code, outcome.message, outcome.details);
    case "exit": {
      const tail = readLogTail(logFile, 12)
        .map((l) => `  ${l}`)
        .join("\n");
      throw new MsbError(
        "SERVICE_UNAVAILABLE",
        `The detached msb server ${outcome.reason} before it was ready. Last lines of ${logFile}:\n${tail}\nNext step: run \`msb server start\` in the foreground to see why.`,
        { details: { logFile } },
      );
    }
  }
}

export async function runServerStart(
  options: StartOptions,
  global: GlobalOptions,
  deps: CliDeps,
): Promise<void> {
  const detachedChild = deps.env[DETACHED_ENV] === "1";
  // The detached supervisor gets the (derived) secret in its environment, never in argv.
  const keySource = options.key ?? secretFromEnv(deps.env);
  if (options.key !== undefined) {
    // The key was typed on our command line: overwrite argv so `ps` no longer shows it.
    process.title = "msb server start";
  }
  const settings: ServerSettings = {
    host: options.host,
    port: options.port,
    dev: options.dev,
    ...(keySource === undefined ? {} : { secret: deriveServerSecret(keySource) }),
  };

  if (detachedChild) {
    const send = (message: DetachMessage) => {
      if (process.connected) process.send?.(message, () => process.disconnect());
    };
    await runForeground({ ...settings, ...kernelFromEnv(deps.env) }, global, deps, send);
    return;
  }
  const prereqs = await checkBeforeStart(settings, options, global, deps);
  const full: ServerSettings = {
    ...settings,
    ...(prereqs.kernel === undefined ? {} : { kernel: prereqs.kernel }),
    ...(prereqs.initramfs === undefined ? {} : { initramfs: prereqs.initramfs }),
  };
  if (options.detach) await runDetached(full, options, prereqs, global, deps);
  else await runForeground(full, global, deps);
}

function kernelFromEnv(env: NodeJS.ProcessEnv): Partial<ServerSettings> {
  return {
    ...(env["MSB_KERNEL"] === undefined ? {} : { kernel: env["MSB_KERNEL"] }),
    ...(env["MSB_INITRAMFS"] === undefined ? {} : { initramfs: env["MSB_INITRAMFS"] }),
  };
}

export function serverStartCommand(deps: CliDeps): Command {
  return new Command("start")
    .description(
      "start the msb services (image-service, vmm-agent, control-plane) as one supervised process tree",
    )
    .option("--dev", "development mode: no authentication", false)
    .addOption(new Option("--port <port>", "control-plane port").default(5555).argParser(parsePort))
    .option("--host <host>", "control-plane listen address", "127.0.0.1")
    .option("--detach", "run in the background; print the address and pid, then exit", false)
    .option(
      "--key <key>",
      "server secret (64 hex chars, or any string, hashed); default: $MSB_HOME/server.key",
    )
    .option(
      "--no-build",
      "do not build a missing kernel, agent or default images; only report them",
    )
    .action(async (options: StartOptions, cmd: Command) => {
      await runServerStart(options, globalOptions(cmd, deps.env), deps);
    });
}
