import { randomBytes } from "node:crypto";
import { constants } from "node:fs";
import { open } from "node:fs/promises";
import { setTimeout as sleep } from "node:timers/promises";
import { createAgentClient, createReplSession } from "@msb/agent-protocol";
import { MsbError } from "@msb/errors";
import type { Logger } from "@msb/runtime";
import type { Admission } from "../admission.js";
import type { Hypervisor, VmProcess } from "../hypervisor/hypervisor.js";
import type { VmIdentities, VmIdentity } from "../identity/identity.js";
import { ensureScratchDisk } from "../scratch-disk.js";
import type { TemplateBuilder } from "./templates.js";

/**
 * The stdlib modules a first Python cell most often pulls in, imported once in the template
 * so that every clone has them loaded. Nothing is bound in the user's namespace.
 */
export const PYTHON_WARM_CELL = [
  "import importlib as _msb_i",
  "for _msb_m in ('json', 're', 'os', 'sys', 'math', 'random', 'datetime', 'collections',",
  "               'itertools', 'functools', 'subprocess', 'pathlib', 'tempfile', 'base64',",
  "               'hashlib', 'time', 'typing', 'dataclasses', 'io', 'csv', 'string', 'textwrap'):",
  "    try:",
  "        _msb_i.import_module(_msb_m)",
  "    except ImportError:",
  "        pass",
  "del _msb_i, _msb_m",
].join("\n");

/** The agent's console line once it has seen the host hang up (images/agent/agent.c). */
const DISCONNECTED_LINE = "msb-agent: host disconnected";

export interface TemplateBuilderDeps {
  readonly hypervisor: Hypervisor;
  readonly admission: Admission;
  /** The builder VM's QEMU runs as a uid of its own, like every VM's. */
  readonly identities: VmIdentities;
  readonly logger: Logger;
  /** Spawn to READY, and for the warm-up; a template build on a busy host is slow. */
  readonly bootTimeoutMs: number;
}

/** Forces a VM down: QMP quit, then SIGKILL. */
async function down(vm: VmProcess): Promise<void> {
  await vm.quit(AbortSignal.timeout(1_000)).catch(() => undefined);
  const exited = await Promise.race([vm.exited.then(() => true), sleep(2_000, false)]);
  if (!exited) {
    vm.kill("SIGKILL");
    await vm.exited;
  }
}

/** The builder VM's identity id: `:` never occurs in a sandbox's vm id. */
export function builderVmId(key: string): string {
  return `template:${key}`;
}

/**
 * Creates the template's RAM file empty (never through a link) so that it can be given to the
 * builder's uid before its QEMU opens it; QEMU sizes it.
 */
async function createMemoryFile(path: string): Promise<void> {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW;
  await (await open(path, flags, 0o600)).close();
}

/**
 * Builds a template: boots a pristine VM (hostname "template", no user env, workdir or
 * volumes) with its RAM in a shared file, waits for READY, starts the Python REPL and runs
 * the warm-up cell when the image has python3 (never Node: see docs/architecture.md,
 * "Templates"), hangs up on the agent so that every clone starts disconnected and sends
 * HELLO to its own host, then saves the device state and quits.
 */
export function createTemplateBuilder(deps: TemplateBuilderDeps): TemplateBuilder {
  const { hypervisor, admission, identities, logger } = deps;
  return async ({ key, inputs, paths }, signal) => {
    // A build takes a boot slot but no VM slot: it is short-lived, and a user's create must
    // never be refused because a template happens to be building.
    const releaseBoot = await admission.acquireBoot(signal);
    let vm: VmProcess | undefined;
    let identity: VmIdentity | undefined;
    const vmId = builderVmId(key);
    let built = false;
    try {
      const deadline = AbortSignal.any([signal, AbortSignal.timeout(deps.bootTimeoutMs)]);
      await ensureScratchDisk(paths.scratchPath, inputs.diskQuotaBytes, {
        keep: false,
        signal: deadline,
      });
      await createMemoryFile(paths.memoryPath);
      // Scratch disk and RAM are the builder's own while it runs; see the finally below.
      identity = await identities.assign(vmId, {
        network: inputs.network,
        dir: paths.vmDir,
        ownFiles: [paths.scratchPath],
        volumes: [],
      });
      await identities.prepareFile(paths.memoryPath, identity, "own");
      vm = await hypervisor.launch({
        vmId,
        dir: paths.vmDir,
        accelerator: inputs.accelerator === "kvm" ? "kvm" : "tcg",
        kernelPath: inputs.kernelPath,
        initramfsPath: inputs.initramfsPath,
        memoryMib: inputs.memoryMib,
        vcpus: inputs.vcpus,
        rootfsPath: inputs.rootfsPath,
        scratchDiskPath: paths.scratchPath,
        ...(inputs.network !== "none" ? { network: { portForwards: [] } } : {}),
        volumes: [],
        memoryFile: { path: paths.memoryPath, shared: true },
        ...(identity.credentials === undefined ? {} : { credentials: identity.credentials }),
      });
      const client = createAgentClient(await vm.connectAgent(deadline), {
        onWarning: (message) => logger.debug({ template: key, message }, "template agent"),
      });
      const hello = await client.waitHello({ signal: deadline, timeoutMs: deps.bootTimeoutMs });
      if (!hello.ready) {
        throw new MsbError(
          "VM_BOOT_FAILED",
          `The template VM did not boot: ${hello.bootErrors.join("; ")}.`,
        );
      }
      const configured = await client.configure(
        { hostname: "template", timeUnixMs: Date.now(), entropy: randomBytes(64) },
        { signal: deadline },
      );
      if (configured.errors.length > 0) {
        throw new MsbError(
          "VM_BOOT_FAILED",
          `Template configure: ${configured.errors.join("; ")}.`,
        );
      }
      let replStream: number | undefined;
      const session = createReplSession(client, {
        language: "python",
        startTimeoutMs: deps.bootTimeoutMs,
      });
      try {
        await session.start();
        const warm = await session.run(PYTHON_WARM_CELL, {
          hidden: true,
          signal: deadline,
          timeoutMs: deps.bootTimeoutMs,
        });
        if (warm.status !== "success") {
          throw new MsbError(
            "VM_BOOT_FAILED",
            `The template's Python warm-up failed: ${warm.error?.message ?? warm.status}.`,
          );
        }
        replStream = session.stream;
      } catch (err) {
        // No python3 in the image: the template is still worth it (the boot is skipped).
        if (!(err instanceof MsbError && err.code === "INVALID_PARAMS")) throw err;
      }
      // Hang up and wait until the agent has seen it: the snapshot then holds an agent
      // waiting for a host, and each clone's first connection gets a fresh HELLO.
      client.close();
      while (!vm.consoleTail(10).some((l) => l.includes(DISCONNECTED_LINE))) {
        if (deadline.aborted) {
          throw new MsbError("VM_BOOT_TIMEOUT", "The template's agent never saw the host hang up.");
        }
        await sleep(5);
      }
      await vm.snapshot(paths.statePath, deadline);
      built = true;
      return { warmLanguage: replStream === undefined ? "" : "python", replStream };
    } finally {
      try {
        if (vm !== undefined) await down(vm);
        // Its QEMU is gone: the RAM file becomes root's, openable by every VM's QEMU (see
        // `FileAccess` "shared-rw"), and the scratch disk nobody's but the vmm-agent's, so
        // that a later VM given the builder's uid cannot change what clones start from.
        if (built && identity !== undefined) {
          await identities.prepareFile(paths.memoryPath, identity, "shared-rw");
          await identities.prepareFile(paths.scratchPath, identity, "private");
        }
      } finally {
        await identities.release(vmId);
        releaseBoot();
      }
    }
  };
}
