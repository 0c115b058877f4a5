import { MsbError } from "@msb/errors";
import { ALL_NAMESPACES } from "@msb/keys";
import { assertMayAccess } from "../auth/caller.js";
import type { VmInfo } from "./backends.js";
import { VM_GONE_CODES, type ServiceContext } from "./context.js";
import { configHash, type SandboxConfig } from "./sandbox-config.js";
import { invalidParams } from "./schemas.js";
import type { SandboxService } from "./service-types.js";
import type { SandboxRecord } from "./store.js";

/** Start, stop and reconcile: the sandbox state machine against the vmm-agent. */
export function createLifecycle(
  ctx: ServiceContext,
): Pick<SandboxService, "start" | "stop" | "reconcile"> {
  const {
    store,
    image,
    vmm,
    policy,
    logger,
    mutex,
    lifecycle,
    keyOf,
    notFound,
    busy,
    vmsById,
    startFacts,
    stopQuietly,
  } = ctx;
  return {
    async start(caller, params) {
      const { namespace, sandbox: name } = params;
      assertMayAccess(caller, namespace);
      const requested = params.config === undefined ? undefined : policy.check(params.config);
      const bootTimeoutMs =
        params.config?.timeout === undefined ? 0 : Math.ceil(params.config.timeout * 1000);

      return mutex.run(keyOf(namespace, name), async () => {
        const existing = store.get(namespace, name);
        if (requested === undefined && existing === undefined) {
          throw invalidParams([
            { field: "config", message: "is required to create a sandbox (at least config.image)" },
          ]);
        }
        // A start without config reuses the stored one, checked again like a new request:
        // its volumes may have been swapped for symlinks, the policy may have changed.
        const config = requested ?? policy.recheck((existing as SandboxRecord).config);
        const hash = configHash(config);
        const result = { namespace, name, state: "running" as const, image: config.image };

        if (existing?.state === "running") {
          if (existing.configHash === hash || requested === undefined) {
            const vm = (await vmsById(lifecycle)).get(existing.vmId);
            return { ...result, alreadyRunning: true, ...startFacts(vm) };
          }
          const fields = differingFields(existing.config, config);
          throw new MsbError(
            "SANDBOX_EXISTS",
            `Sandbox '${name}' in namespace '${namespace}' is already running with a different configuration (${fields.join(", ")} differ). Stop it first, start it with the same configuration, or pick another name.`,
            { details: { sandbox: name, namespace, differs: fields } },
          );
        }
        if (existing?.state === "starting" || existing?.state === "stopping") throw busy(existing);

        const vmId = keyOf(namespace, name);
        // The scratch disk (the sandbox's files) survives stop/start, unless the image changed
        // underneath it.
        const keepDisk = existing !== undefined && existing.config.image === config.image;
        // No await between the quota check and the record of the start: two starts in one
        // namespace cannot both pass.
        policy.checkQuota(name, config, store.list(namespace));
        store.apply(namespace, name, { type: "start" }, { config, configHash: hash, vmId });
        let vmRequested = false;
        try {
          // A namespace-bound key may not pull (image.pull is host-wide): it gets images
          // already present, or from the registries the operator allows for such keys.
          const pullIfMissing =
            caller.scope === ALL_NAMESPACES || policy.namespaceMayPull(config.image);
          const rootfs = await image
            .prepareRootfs(config.image, lifecycle, { pullIfMissing })
            .catch((err: unknown) => {
              if (!pullIfMissing && err instanceof MsbError && err.code === "IMAGE_NOT_FOUND") {
                throw policy.pullDenied(config.image, err);
              }
              throw err;
            });
          vmRequested = true;
          const vm = await vmm.createVm(
            {
              vmId,
              rootfs,
              memoryMib: config.memoryMib,
              cpus: config.cpus,
              env: [...rootfs.env, ...config.envs],
              workdir: config.workdir ?? rootfs.workdir,
              volumes: config.volumes,
              ports: config.ports,
              network: config.network,
              hostname: name,
              bootTimeoutMs,
              keepDisk,
            },
            lifecycle,
          );
          store.apply(namespace, name, { type: "ready" });
          logger.info(
            { namespace, sandbox: name, image: config.image, caller: caller.id },
            "sandbox running",
          );
          return { ...result, alreadyRunning: false, ...startFacts(vm) };
        } catch (err) {
          const known = err instanceof MsbError && err.code !== "INTERNAL";
          store.apply(namespace, name, {
            type: "fail",
            reason: known ? err.message : "internal fault while starting (see the server log)",
            code: known ? err.code : "INTERNAL",
          });
          // A deadline or a cancel may leave a VM booting on the vmm-agent's side.
          if (vmRequested) await stopQuietly(vmId);
          throw err;
        }
      });
    },

    async stop(caller, params) {
      const { namespace, sandbox: name, remove } = params;
      assertMayAccess(caller, namespace);
      return mutex.run(keyOf(namespace, name), async () => {
        const record = store.get(namespace, name);
        if (record === undefined) throw notFound(namespace, name);
        if (record.state === "starting" || record.state === "stopping") throw busy(record);
        const alreadyStopped = record.state === "stopped";
        if (alreadyStopped) {
          // The VM is down already; the vmm-agent still deletes its disk (also when it no
          // longer tracks the VM, e.g. after a restart).
          if (remove) await vmm.stopVm(record.vmId, lifecycle, { removeDisk: true });
        } else {
          store.apply(namespace, name, { type: "stop" });
          try {
            await vmm.stopVm(record.vmId, lifecycle, { removeDisk: remove });
          } catch (err) {
            if (!(err instanceof MsbError && VM_GONE_CODES.includes(err.code))) {
              const known = err instanceof MsbError && err.code !== "INTERNAL";
              store.apply(namespace, name, {
                type: "fail",
                reason: `stopping failed: ${known ? err.message : "internal fault (see the server log)"}`,
                code: known ? err.code : "INTERNAL",
              });
              throw err;
            }
          }
          store.apply(namespace, name, { type: "stopped" });
          logger.info({ namespace, sandbox: name, caller: caller.id }, "sandbox stopped");
        }
        if (remove) {
          // Under the sandbox's lock the row is stopped; the state guard is belt and braces.
          store.remove(namespace, name, ["stopped"]);
          logger.info({ namespace, sandbox: name, caller: caller.id }, "sandbox removed");
        }
        return { namespace, name, state: "stopped" as const, alreadyStopped, removed: remove };
      });
    },

    async reconcile(signal, reconcileOptions) {
      const live = reconcileOptions?.live === true;
      const listedAt = Date.now();
      const vms = await vmm.listVms(signal);
      const byId = new Map<string, VmInfo>(vms.map((vm) => [vm.vmId, vm]));
      const lost: string[] = [];
      let checked = 0;
      const known = new Set<string>();
      for (const snapshot of store.list()) {
        known.add(snapshot.vmId);
        if (snapshot.state === "stopped" || snapshot.state === "failed") continue;
        if (live && snapshot.state !== "running") continue;
        checked += 1;
        await mutex.run(keyOf(snapshot.namespace, snapshot.name), async () => {
          const r = store.get(snapshot.namespace, snapshot.name);
          if (r === undefined) return;
          // Changed since the vmm-agent answered (a stop and a new start): the answer is stale.
          if (live && (r.state !== "running" || r.updatedAt > listedAt)) return;
          const vm = byId.get(r.vmId);
          const alive = vm?.status === "running";
          const why =
            vm === undefined
              ? ""
              : ` (vmm-agent: ${vm.status}${vm.reason ? `, ${vm.reason}` : ""})`;
          if (r.state === "running" && !alive) {
            const reason = !live
              ? `VM lost while the control plane was down${why}`
              : vm === undefined
                ? "the VM is gone: the vmm-agent no longer runs it (the vmm-agent was restarted, and its VMs stop with it)"
                : `the VM stopped unexpectedly: ${vm.reason || vm.status}`;
            store.apply(r.namespace, r.name, { type: "fail", reason, code: "VM_DIED" });
            lost.push(r.vmId);
          } else if (r.state === "starting") {
            if (alive) {
              store.apply(r.namespace, r.name, { type: "ready" });
            } else {
              store.apply(r.namespace, r.name, {
                type: "fail",
                reason: `VM lost while the control plane was down; it was still starting${why}`,
                code: "VM_DIED",
              });
              if (vm !== undefined) await stopQuietly(r.vmId);
              lost.push(r.vmId);
            }
          } else if (r.state === "stopping") {
            if (vm !== undefined && vm.status !== "stopped") await stopQuietly(r.vmId);
            store.apply(r.namespace, r.name, { type: "stopped" });
          }
        });
      }
      const orphans = vms
        .filter((vm) => !known.has(vm.vmId) && vm.status === "running")
        .map((vm) => vm.vmId);
      // The periodic pass reports orphans to its caller, which logs them when they change.
      if (orphans.length > 0 && !live) {
        logger.warn({ orphans }, "the vmm-agent runs VMs the control plane has no record of");
      }
      if (lost.length > 0) logger.warn({ lost }, "sandboxes whose VM was lost marked failed");
      return { checked, lost, orphans };
    },
  };
}

const CONFIG_FIELDS: readonly [keyof SandboxConfig, string][] = [
  ["image", "image"],
  ["memoryMib", "memory"],
  ["cpus", "cpus"],
  ["envs", "envs"],
  ["workdir", "workdir"],
  ["volumes", "volumes"],
  ["ports", "ports"],
  ["network", "network"],
  ["scripts", "scripts"],
  ["exec", "exec"],
];

function differingFields(a: SandboxConfig, b: SandboxConfig): string[] {
  return CONFIG_FIELDS.filter(([key]) => JSON.stringify(a[key]) !== JSON.stringify(b[key])).map(
    ([, wire]) => wire,
  );
}
