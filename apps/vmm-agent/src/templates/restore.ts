import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { rename, rm } from "node:fs/promises";
import { promisify } from "node:util";
import {
  createAgentClient,
  createReplSession,
  type AgentClient,
  type Hello,
  type ReplSession,
} from "@msb/agent-protocol";
import { MsbError } from "@msb/errors";
import type { Logger } from "@msb/runtime";
import type { Accelerator, Hypervisor, VmProcess } from "../hypervisor/hypervisor.js";
import type { PortForwardSpec } from "../hypervisor/hypervisor.js";
import type { VmIdentities } from "../identity/identity.js";
import { TEMP_FILE_MARKER } from "../supervision/vm-files.js";
import type { Template } from "./templates.js";

const run = promisify(execFile);

/**
 * Gives a clone its own scratch disk: a standalone sparse copy of the template's (a reflink
 * where the filesystem has them). Measured here (ext4, 1 GiB sparse disk with a few MiB
 * used): 10-25 ms, about what `qemu-img create -b` costs, and the copy needs no backing file
 * — it keeps working for a later cold restart with keep_disk after the template is gone.
 */
export async function copyScratchDisk(
  from: string,
  to: string,
  signal: AbortSignal,
): Promise<void> {
  const tmp = `${to}${TEMP_FILE_MARKER}${randomBytes(4).toString("hex")}`;
  try {
    await run("cp", ["--sparse=always", "--reflink=auto", from, tmp], { signal, timeout: 60_000 });
    await rename(tmp, to);
  } catch (err) {
    await rm(tmp, { force: true });
    if (signal.aborted) throw signal.reason;
    throw new MsbError(
      "VM_BOOT_FAILED",
      `Could not copy the template's scratch disk: ${(err as Error).message}.`,
      { cause: err },
    );
  }
}

/**
 * The hidden cell a clone's warm Python REPL runs before any user cell: every clone starts
 * with the template's `random` state and tempfile name sequence, so both are reset from the
 * (reseeded) kernel RNG; the sandbox's env and workdir are applied to the interpreter the
 * way a cold REPL would have inherited them. PYTHONHASHSEED stays the template's (str hash
 * order is shared by clones; it is not a secret in a sandbox the user owns).
 */
export function reseedCell(env: Readonly<Record<string, string>>, workdir: string): string {
  const lines = [
    "import json as _msb_j, os as _msb_os, random as _msb_r, tempfile as _msb_t",
    "_msb_r.seed()",
    "_msb_t._name_sequence = None",
    `_msb_os.environ.update(_msb_j.loads(${JSON.stringify(JSON.stringify(env))}))`,
  ];
  if (workdir !== "") lines.push(`_msb_os.chdir(${JSON.stringify(workdir)})`);
  lines.push("del _msb_j, _msb_os, _msb_r, _msb_t");
  return lines.join("\n");
}

export interface CloneParams {
  /** Also the id its QEMU identity is assigned under (release it once the QEMU exited). */
  readonly vmId: string;
  readonly dir: string;
  readonly template: Template;
  readonly accelerator: Accelerator;
  readonly scratchDiskPath: string;
  readonly portForwards: readonly PortForwardSpec[];
  readonly timeoutMs: number;
}

export interface Clone {
  readonly vm: VmProcess;
  readonly client: AgentClient;
  readonly hello: Hello;
  /** The warm REPL, already adopted (pooled clones: see `prewarm`). */
  python?: ReplSession;
}

/**
 * Runs one empty hidden cell in a pooled clone's warm REPL before it is paused. Under TCG a
 * restored QEMU starts with an empty translation cache: every guest code path (agent, virtio,
 * the Python interpreter loop) is translated again on first use. Doing that once while the
 * clone waits in the pool takes it off the claim's critical path. Nothing of a sandbox is
 * applied; the reseed still happens at claim.
 */
export async function prewarm(
  clone: Clone,
  template: Template,
  outputCapBytes: number,
  signal: AbortSignal,
  timeoutMs: number,
): Promise<void> {
  const stream = template.replStream;
  if (stream === undefined || !clone.hello.streams.includes(stream)) return;
  const python = createReplSession(clone.client, {
    language: "python",
    maxOutputBytes: outputCapBytes,
  });
  python.adopt(stream);
  const r = await python.run("pass", { hidden: true, signal, timeoutMs });
  if (r.status !== "success" || r.restarted) {
    await python.close();
    throw new MsbError("VM_BOOT_FAILED", "The pooled clone's Python REPL did not answer.");
  }
  clone.python = python;
}

/** Who the clone becomes: what `configure` and the REPL reseed apply. */
export interface Identity {
  readonly hostname: string;
  readonly env: Readonly<Record<string, string>>;
  readonly workdir: string;
  readonly outputCapBytes: number;
  readonly timeoutMs: number;
}

export interface Restored {
  readonly client: AgentClient;
  /** The template's warm Python REPL, reseeded; undefined when the template has none. */
  readonly python: ReplSession | undefined;
}

/**
 * Starts a clone of `template`: its own scratch copy, a new QEMU (as a uid of its own, with
 * the template's network policy) mapping the template's RAM privately and loading its device
 * state, up to the agent's HELLO to this host. Nothing of the sandbox is applied yet (see
 * `personalize`): a pool keeps clones in this state, paused. `onLaunched` gets the QEMU
 * process as soon as it exists (exit watching, cleanup). The caller releases the identity
 * (`identities.release(params.vmId)`) after the QEMU exited, also when this throws.
 */
export async function launchClone(
  deps: { hypervisor: Hypervisor; identities: VmIdentities; logger: Logger },
  params: CloneParams,
  onLaunched: (vm: VmProcess) => void,
  signal: AbortSignal,
): Promise<Clone> {
  const { template } = params;
  const inputs = template.inputs;
  await copyScratchDisk(template.paths.scratchPath, params.scratchDiskPath, signal);
  // The RAM file is already open to every VM's QEMU (the builder made it "shared-rw").
  const identity = await deps.identities.assign(params.vmId, {
    network: inputs.network,
    dir: params.dir,
    ownFiles: [params.scratchDiskPath],
    volumes: [],
  });
  const vm = await deps.hypervisor.launch({
    vmId: params.vmId,
    dir: params.dir,
    accelerator: params.accelerator,
    kernelPath: inputs.kernelPath,
    initramfsPath: inputs.initramfsPath,
    memoryMib: inputs.memoryMib,
    vcpus: inputs.vcpus,
    rootfsPath: inputs.rootfsPath,
    scratchDiskPath: params.scratchDiskPath,
    ...(inputs.network !== "none" ? { network: { portForwards: params.portForwards } } : {}),
    volumes: [],
    memoryFile: { path: template.paths.memoryPath, shared: false },
    restoreStatePath: template.paths.statePath,
    ...(identity.credentials === undefined ? {} : { credentials: identity.credentials }),
  });
  onLaunched(vm);
  const client = createAgentClient(await vm.connectAgent(signal), {
    onWarning: (message) => deps.logger.warn({ vmId: params.vmId, message }, "guest agent"),
  });
  try {
    const hello = await client.waitHello({ signal, timeoutMs: params.timeoutMs });
    return { vm, client, hello };
  } catch (err) {
    client.close();
    throw err;
  }
}

/**
 * Makes a clone a sandbox: `configure` (hostname, env, workdir, clock, fresh entropy and a
 * CRNG reseed), then the reseed of the warm REPL. Only then may user code run.
 */
export async function personalize(
  clone: Clone,
  template: Template,
  identity: Identity,
  signal: AbortSignal,
): Promise<Restored> {
  const { client, hello } = clone;
  const configured = await client.configure(
    {
      hostname: identity.hostname,
      env: identity.env,
      ...(identity.workdir === "" ? {} : { workdir: identity.workdir }),
      timeUnixMs: Date.now(),
      entropy: randomBytes(64),
    },
    { signal, timeoutMs: identity.timeoutMs },
  );
  if (configured.errors.length > 0) {
    throw new MsbError(
      "VM_BOOT_FAILED",
      `The restored guest could not apply the VM's settings: ${configured.errors.join("; ")}.`,
      { details: { errors: configured.errors } },
    );
  }
  let python = clone.python;
  if (python === undefined) {
    const stream = template.replStream;
    if (stream === undefined || !hello.streams.includes(stream)) {
      return { client, python: undefined };
    }
    python = createReplSession(client, {
      language: "python",
      ...(identity.workdir === "" ? {} : { cwd: identity.workdir }),
      maxOutputBytes: identity.outputCapBytes,
    });
    python.adopt(stream);
  }
  const reseeded = await python.run(reseedCell(identity.env, identity.workdir), {
    hidden: true,
    signal,
    timeoutMs: identity.timeoutMs,
  });
  if (reseeded.status !== "success" || reseeded.restarted) {
    // Never hand out a REPL that may share its random state with another clone.
    await python.close();
    throw new MsbError(
      "VM_BOOT_FAILED",
      `The restored Python REPL could not be reseeded: ${reseeded.error?.message ?? reseeded.status}.`,
    );
  }
  return { client, python };
}
