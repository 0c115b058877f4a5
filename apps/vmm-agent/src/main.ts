import { Server } from "@grpc/grpc-js";
import { chmod, mkdir, rm } from "node:fs/promises";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { VmmServiceService, bindGrpcServer } from "@msb/proto";
import { createLogger, runMain } from "@msb/runtime";
import { createAdmission } from "./admission.js";
import { loadConfig } from "./config.js";
import { createGuestArtifactsResolver } from "./guest/artifacts.js";
import { kvmGroup, probeDir, probeKvm } from "./guest/kvm-probe.js";
import { createVmmServiceServer } from "./grpc/vmm-service-server.js";
import { chooseAccelerator } from "./hypervisor/accelerator.js";
import type { AcceleratorChoice } from "./hypervisor/hypervisor.js";
import { createVmIdentities } from "./identity/identity.js";
import { createQemuHypervisor } from "./hypervisor/qemu/qemu-hypervisor.js";
import { installNetworkPolicy } from "./network/policy.js";
import { claimIdRange } from "./supervision/id-range-lock.js";
import { reapLeftovers } from "./supervision/leftovers.js";
import { createProcProcessTable } from "./supervision/process-table.js";
import { createTemplateBuilder } from "./templates/template-builder.js";
import { createTemplateManager, type TemplateManager } from "./templates/templates.js";
import { createVmService } from "./vms/vm-service.js";

const VERSION = "0.1.0";
const logger = createLogger({ name: "vmm-agent" });

runMain(
  async (lifecycle) => {
    const config = loadConfig(process.env);
    // MSB_HOME holds every tenant's database rows and images: its owner's alone.
    await mkdir(config.msbHome, { recursive: true, mode: 0o700 });
    await chmod(config.msbHome, 0o700);
    await mkdir(config.sandboxesDir, { recursive: true, mode: 0o700 });

    const leftovers = await reapLeftovers({
      sandboxesDir: config.sandboxesDir,
      processes: createProcProcessTable(),
    });
    for (const l of leftovers) logger.warn(l, "reaped what an earlier vmm-agent left");

    const artifacts = createGuestArtifactsResolver({
      kernelPath: config.kernelPath,
      initramfsPath: config.initramfsPath,
      repoRoot: fileURLToPath(new URL("../../..", import.meta.url)),
      cacheDir: config.cacheDir,
    });
    const hypervisor = createQemuHypervisor({
      qemuBinary: config.qemuBinary,
      tcgTbSizeMib: config.tcgTbSizeMib,
      consoleLogMaxBytes: config.consoleLogMaxBytes,
      seccomp: config.qemuSeccomp,
      logger,
    });
    if (!config.qemuSeccomp) logger.warn("QEMU's seccomp filter is off (MSB_QEMU_SECCOMP=off)");

    // Root can give every QEMU a uid of its own and firewall it; anyone else cannot.
    const privileged = process.getuid?.() === 0;
    if (privileged) {
      // Another home's live vmm-agent on overlapping ids would share uids and the firewall
      // chain with this one: refused. Released last (hooks run newest first).
      const releaseIds = await claimIdRange({
        msbHome: config.msbHome,
        uidBase: config.vmUidBase,
        uidCount: config.vmUidCount,
        gidBase: config.vmGidBase,
      });
      lifecycle.onShutdown("id range", releaseIds);
    }
    const identities = createVmIdentities({
      privileged,
      uidBase: config.vmUidBase,
      uidCount: config.vmUidCount,
      gidBase: config.vmGidBase,
      grantsDir: join(config.msbHome, "run", "volume-grants"),
      extraGroups: await kvmGroup(),
      vmRoots: [config.sandboxesDir, config.templatesDir, config.templateMemoryDir],
      home: config.msbHome,
    });
    for (const dir of await identities.reapGrants()) {
      logger.warn({ dir }, "took back a volume grant an earlier vmm-agent left");
    }
    const networkPolicy = await installNetworkPolicy({
      privileged,
      publicGid: identities.gids.publicNet,
      logger,
    });
    if (!networkPolicy.status.enforced) {
      logger.warn({ reason: networkPolicy.status.note }, "network policy 'public' not enforced");
    }
    // Runs after the VMs are stopped (hooks run newest first).
    lifecycle.onShutdown("network policy", () => networkPolicy.remove());

    // Probed once per process; not remembered while the guest kernel is missing.
    let choice: Promise<AcceleratorChoice> | undefined;
    const accelerator = (): Promise<AcceleratorChoice> => {
      choice ??= (async () => {
        const { kernelPath, initramfsPath } = await artifacts();
        const dir = probeDir(config.sandboxesDir);
        const result = await chooseAccelerator({
          mode: config.accel,
          probeTimeoutMs: config.accelProbeTimeoutMs,
          probeKvm: (signal) =>
            probeKvm({ hypervisor, kernelPath, initramfsPath, dir, identities }, signal),
        });
        await rm(dir, { recursive: true, force: true });
        logger.info(result, "accelerator chosen");
        return result;
      })().catch((err: unknown) => {
        choice = undefined;
        throw err;
      });
      return choice;
    };
    void accelerator().catch((err: unknown) =>
      logger.warn({ err }, "accelerator not probed yet: the guest kernel or agent is missing"),
    );

    const admission = createAdmission({
      maxVms: config.maxVms,
      memoryBudgetMib: Math.floor((totalmem() / 1024 / 1024) * (config.vmMemoryPercent / 100)),
      maxConcurrentBoots: config.maxConcurrentBoots ?? 2 * cpus().length,
    });
    let templates: TemplateManager | undefined;
    if (config.templatesEnabled) {
      templates = createTemplateManager(
        {
          builder: createTemplateBuilder({
            hypervisor,
            admission,
            identities,
            logger,
            bootTimeoutMs: config.bootTimeoutMs,
          }),
          logger,
          admission,
        },
        {
          templatesDir: config.templatesDir,
          memoryDir: config.templateMemoryDir,
          retryFailedAfterMs: 60_000,
          maxMemoryMib: config.templateMemoryMaxMib,
          maxNamespaceMemoryMib: config.templateMemoryNamespaceMaxMib,
        },
      );
      await templates.init();
    }
    const service = createVmService(
      {
        hypervisor,
        admission,
        logger,
        accelerator,
        artifacts,
        identities,
        networkPolicy: networkPolicy.status,
        seccomp: config.qemuSeccomp,
        ...(templates ? { templates } : {}),
      },
      {
        sandboxesDir: config.sandboxesDir,
        defaultMemoryMib: config.defaultMemoryMib,
        defaultVcpus: config.defaultVcpus,
        defaultDiskQuotaBytes: config.defaultDiskQuotaBytes,
        bootTimeoutMs: config.bootTimeoutMs,
        stopTimeoutMs: config.stopTimeoutMs,
        defaultRunTimeoutMs: config.defaultRunTimeoutMs,
        outputCapBytes: config.outputCapBytes,
        agentVersion: VERSION,
        poolSize: config.poolSize,
        idlePauseMs: config.idlePauseMs,
        volumePolicy: config.volumePolicy,
      },
    );
    // Hooks run newest first: stop serving, then stop every VM.
    lifecycle.onShutdown("vms", (signal) => service.stopAll(signal));

    const server = new Server({ "grpc.max_receive_message_length": 64 * 1024 * 1024 });
    server.addService(VmmServiceService, createVmmServiceServer(service, logger));
    // The one binding helper of every msb gRPC server (libs/proto): same codes everywhere.
    const address = await bindGrpcServer(server, config.listenAddress, {
      addressSetting: "MSB_VMM_AGENT_ADDR",
      onStaleSocket: (path) => logger.info({ path }, "removed stale socket"),
    });
    lifecycle.onShutdown("grpc", () => {
      // Streams in flight (REPL cells, commands) end when their VM stops; don't wait for them.
      server.forceShutdown();
      if (address.startsWith("unix:")) return rm(address.slice(5), { force: true });
    });
    logger.info({ address, msbHome: config.msbHome, version: VERSION }, "vmm-agent listening");
  },
  { logger, drainTimeoutMs: 15_000 },
);
