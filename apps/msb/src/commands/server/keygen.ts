import { Command } from "commander";
import { ALL_NAMESPACES, createApiKey, parseDuration } from "@msb/keys";
import { printJson, type CliDeps, type GlobalOptions } from "../../cli/context.js";
import { globalOptions } from "../../cli/globals.js";
import { msbPaths, readLockState, resolveSigningSecret, secretFromEnv } from "@msb/supervisor";

export interface KeygenOptions {
  readonly expire?: string;
  readonly namespace: string;
  readonly key?: string;
}

/** What `msb server keygen --json` prints. */
export interface KeygenResult {
  readonly key: string;
  /** `*` for every namespace. */
  readonly namespace: string;
  /** ISO time, or null for a key that does not expire. */
  readonly expiresAt: string | null;
}

/**
 * Issues an API key signed with this MSB_HOME's server secret (or the `--key` the server was
 * started with). Keys are stateless: the server needs no call to accept them. The key alone
 * goes to stdout so `KEY=$(msb server keygen)` works; what it grants goes to stderr.
 */
export async function runServerKeygen(
  options: KeygenOptions,
  global: GlobalOptions,
  deps: CliDeps,
  now: number = Date.now(),
): Promise<KeygenResult> {
  const expiresInMs = options.expire === undefined ? undefined : parseDuration(options.expire);
  const paths = msbPaths(global.home);
  const state = readLockState(paths.lockFile, deps.table);
  const usesGivenKey = options.key !== undefined || secretFromEnv(deps.env) !== undefined;
  if (
    state.kind === "running" &&
    state.lock.customSecret === true &&
    !usesGivenKey &&
    !global.json
  ) {
    deps.io.err(
      "msb: note: the running server was started with --key; keys from server.key will not work against it. Pass the same --key to keygen.\n",
    );
  }
  const secret = await resolveSigningSecret(options.key, deps.env, paths.home);
  const key = createApiKey(secret, {
    namespace: options.namespace,
    now,
    ...(expiresInMs === undefined ? {} : { expiresInMs }),
  });
  const result: KeygenResult = {
    key,
    namespace: options.namespace,
    expiresAt: expiresInMs === undefined ? null : new Date(now + expiresInMs).toISOString(),
  };
  if (global.json) {
    printJson(deps.io, result);
  } else {
    deps.io.out(`${key}\n`);
    const scope =
      options.namespace === ALL_NAMESPACES ? "all namespaces" : `namespace ${options.namespace}`;
    deps.io.err(
      `msb: API key for ${scope}, ${result.expiresAt === null ? "no expiry" : `expires ${result.expiresAt}`}\n`,
    );
  }
  return result;
}

export function serverKeygenCommand(deps: CliDeps): Command {
  return new Command("keygen")
    .description("issue an API key for the server of this MSB_HOME")
    .option("--expire <duration>", "lifetime, e.g. 90s, 30m, 24h, 7d, 1h30m (default: no expiry)")
    .option("--namespace <name>", "the one namespace the key may use; * for all", ALL_NAMESPACES)
    .option("--key <key>", "sign with this server secret (as given to `msb server start --key`)")
    .action(async (options: KeygenOptions, cmd: Command) => {
      await runServerKeygen(options, globalOptions(cmd, deps.env), deps);
    });
}
