import { createHash } from "node:crypto";
import { homedir } from "node:os";
import { join, resolve } from "node:path";
import { MsbError } from "@msb/errors";
import { z } from "zod";
import { volumeRootsFrom, type VolumePolicy } from "./volumes/volume-policy.js";

/** Which accelerator to use: `auto` probes KVM once at start and falls back to TCG. */
export type AccelMode = "auto" | "kvm" | "tcg";

const intFrom = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

const EnvSchema = z.object({
  MSB_HOME: z.string().min(1).optional(),
  MSB_CACHE_DIR: z.string().min(1).optional(),
  MSB_VMM_AGENT_ADDR: z.string().min(1).optional(),
  MSB_KERNEL: z.string().min(1).optional(),
  MSB_INITRAMFS: z.string().min(1).optional(),
  MSB_QEMU: z.string().min(1).default("qemu-system-x86_64"),
  MSB_ACCEL: z.enum(["auto", "kvm", "tcg"]).default("auto"),
  MSB_ACCEL_PROBE_TIMEOUT_MS: intFrom(1_000, 120_000).default(10_000),
  MSB_TCG_TB_SIZE_MIB: intFrom(1, 4096).default(64),
  MSB_MAX_VMS: intFrom(1, 10_000).default(64),
  MSB_VM_MEMORY_PERCENT: intFrom(1, 100).default(80),
  MSB_MAX_CONCURRENT_BOOTS: intFrom(1, 1_000).optional(),
  MSB_BOOT_TIMEOUT_MS: intFrom(1_000, 600_000).default(60_000),
  MSB_STOP_TIMEOUT_MS: intFrom(100, 120_000).default(5_000),
  MSB_DEFAULT_MEMORY_MIB: intFrom(64, 1_048_576).default(512),
  MSB_DEFAULT_VCPUS: intFrom(1, 256).default(1),
  MSB_DEFAULT_DISK_QUOTA_MIB: intFrom(16, 16_777_216).default(1024),
  MSB_DEFAULT_RUN_TIMEOUT_MS: intFrom(100, 86_400_000).default(300_000),
  MSB_OUTPUT_CAP_BYTES: intFrom(1024, 1_073_741_824).default(10 * 1024 * 1024),
  MSB_CONSOLE_LOG_MAX_BYTES: intFrom(4096, 1_073_741_824).default(1024 * 1024),
  MSB_QEMU_SECCOMP: z.enum(["on", "off"]).default("on"),
  // Below 2^31 (some tools treat ids as signed) and outside the ranges distributions and
  // systemd hand out (system/user ids, subuid ranges, the container range below 1879048192).
  MSB_VM_UID_BASE: intFrom(1, 2_147_000_000).optional(),
  MSB_VM_UID_COUNT: intFrom(1, 1_000_000).default(65_536),
  MSB_VM_GID_BASE: intFrom(1, 2_147_000_000).optional(),
  MSB_TEMPLATES: z.enum(["0", "1"]).default("1"),
  MSB_TEMPLATE_MEMORY_DIR: z.string().min(1).optional(),
  MSB_POOL_SIZE: intFrom(0, 64).default(1),
  MSB_TEMPLATE_MEMORY_MAX_MIB: intFrom(0, 16_777_216).default(2048),
  MSB_TEMPLATE_MEMORY_NAMESPACE_MAX_MIB: intFrom(0, 16_777_216).default(1024),
  MSB_IDLE_PAUSE_SECONDS: intFrom(0, 86_400).default(60),
  MSB_VOLUME_ROOTS: z.string().optional(),
  MSB_DEV: z.enum(["0", "1", "true", "false", "yes", "no", ""]).optional(),
});

/** The vmm-agent's settings; every field has a unit in its name where it has one. */
export interface VmmAgentConfig {
  readonly msbHome: string;
  readonly cacheDir: string;
  /** gRPC listen address: `unix:/path` or `host:port`. */
  readonly listenAddress: string;
  /** `$MSB_HOME/sandboxes`: one directory per VM (`<namespace>/<name>`). */
  readonly sandboxesDir: string;
  /** Explicit guest kernel (uncompressed vmlinux); unset means "ask tools/kernel/build.sh". */
  readonly kernelPath: string | undefined;
  /** Explicit initramfs holding the guest agent; unset means "ask tools/agent/build.sh". */
  readonly initramfsPath: string | undefined;
  readonly qemuBinary: string;
  readonly accel: AccelMode;
  /** Deadline of the KVM boot probe (spawn to the agent's HELLO). */
  readonly accelProbeTimeoutMs: number;
  /** TCG translation-cache size; QEMU's default (1 GiB) costs RSS for nothing here. */
  readonly tcgTbSizeMib: number;
  readonly maxVms: number;
  /** Share of host RAM that the sum of VM memory sizes may reach. */
  readonly vmMemoryPercent: number;
  /** Boots in flight at once; the rest queue. Default: 2 per host core. */
  readonly maxConcurrentBoots: number | undefined;
  readonly bootTimeoutMs: number;
  readonly stopTimeoutMs: number;
  readonly defaultMemoryMib: number;
  readonly defaultVcpus: number;
  readonly defaultDiskQuotaBytes: number;
  readonly defaultRunTimeoutMs: number;
  /** Output kept per Exec/RunCode (stdout + stderr); beyond it output is dropped, `truncated`. */
  readonly outputCapBytes: number;
  /** Size at which a VM's console log stops growing (the last lines stay in memory). */
  readonly consoleLogMaxBytes: number;
  /**
   * QEMU's seccomp filter (`-sandbox on,...`). On by default; `off` only for QEMU builds
   * without libseccomp, which refuse the option. Host info reports it when it is off.
   */
  readonly qemuSeccomp: boolean;
  /**
   * When the vmm-agent runs as root, each QEMU runs as its own uid from
   * [vmUidBase, vmUidBase + vmUidCount); no passwd entries are needed.
   */
  readonly vmUidBase: number;
  readonly vmUidCount: number;
  /**
   * Three gids from here: base = shared (read-only artifacts every VM may read, e.g.
   * templates), base + 1 = VMs with network `public`/`none`, base + 2 = network `any`.
   * The host firewall tells VMs apart by these gids.
   */
  readonly vmGidBase: number;
  /** Template snapshots (MSB_TEMPLATES=0: every VM cold-boots). */
  readonly templatesEnabled: boolean;
  /** `$MSB_HOME/templates`: state files and scratch disks of templates. */
  readonly templatesDir: string;
  /**
   * Where template RAM files live: a tmpfs, so that clones map page-cache pages. Default
   * `/dev/shm/msb-<hash of MSB_HOME>` (one per home: two servers never share or delete
   * each other's).
   */
  readonly templateMemoryDir: string;
  /** RAM all template snapshots may hold in the memory dir; least recently used go first. */
  readonly templateMemoryMaxMib: number;
  /** RAM the templates one namespace's creates asked for may hold. */
  readonly templateMemoryNamespaceMaxMib: number;
  /** Paused, restored VMs kept per template (0 = none; 0 too when templates are off). */
  readonly poolSize: number;
  /** A VM without calls for this long is paused until the next call; 0 = never. */
  readonly idlePauseMs: number;
  /**
   * Which host directories VMs may mount: the control plane's rule (MSB_VOLUME_ROOTS; unset =
   * none, or $HOME and /tmp with MSB_DEV=1), and never MSB_HOME or MSB_CACHE_DIR.
   */
  readonly volumePolicy: VolumePolicy;
}

/** Slots of 65,536 ids from 1,900,000,000 on: all below 2^31 (see MSB_VM_UID_BASE above). */
const ID_SLOTS = 3_000;
const ID_SLOT_SIZE = 65_536;

/**
 * The default first VM uid and gid of a home: 1,900,000,000 plus a slot picked by a hash of
 * the resolved MSB_HOME, so that two servers with default settings on one host get different
 * uids and firewall chains (the chain is named by the gid). Two homes that still meet are
 * refused at start (supervision/id-range-lock.ts).
 */
export function defaultIdBase(msbHome: string): number {
  const hash = createHash("sha256").update(resolve(msbHome)).digest().readUInt32BE(0);
  return 1_900_000_000 + (hash % ID_SLOTS) * ID_SLOT_SIZE;
}

/** Reads the configuration from the environment; pure, so tests pass their own `env`. */
export function loadConfig(env: Readonly<Record<string, string | undefined>>): VmmAgentConfig {
  const parsed = EnvSchema.safeParse(env);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => ({ field: i.path.join("."), reason: i.message }));
    throw new MsbError(
      "CONFIG_INVALID",
      `Invalid vmm-agent configuration: ${issues.map((i) => `${i.field}: ${i.reason}`).join("; ")}.`,
      { details: { issues } },
    );
  }
  const e = parsed.data;
  const msbHome = e.MSB_HOME ?? join(homedir(), ".msb");
  const cacheDir = e.MSB_CACHE_DIR ?? join(homedir(), ".cache", "msb");
  const dev = e.MSB_DEV === "1" || e.MSB_DEV === "true" || e.MSB_DEV === "yes";
  return {
    msbHome,
    cacheDir,
    volumePolicy: {
      roots: volumeRootsFrom(e.MSB_VOLUME_ROOTS, dev, homedir()),
      denied: [resolve(msbHome), resolve(cacheDir)],
    },
    listenAddress: e.MSB_VMM_AGENT_ADDR ?? `unix:${join(msbHome, "run", "vmm-agent.sock")}`,
    sandboxesDir: join(msbHome, "sandboxes"),
    kernelPath: e.MSB_KERNEL,
    initramfsPath: e.MSB_INITRAMFS,
    qemuBinary: e.MSB_QEMU,
    accel: e.MSB_ACCEL,
    accelProbeTimeoutMs: e.MSB_ACCEL_PROBE_TIMEOUT_MS,
    tcgTbSizeMib: e.MSB_TCG_TB_SIZE_MIB,
    maxVms: e.MSB_MAX_VMS,
    vmMemoryPercent: e.MSB_VM_MEMORY_PERCENT,
    maxConcurrentBoots: e.MSB_MAX_CONCURRENT_BOOTS,
    bootTimeoutMs: e.MSB_BOOT_TIMEOUT_MS,
    stopTimeoutMs: e.MSB_STOP_TIMEOUT_MS,
    defaultMemoryMib: e.MSB_DEFAULT_MEMORY_MIB,
    defaultVcpus: e.MSB_DEFAULT_VCPUS,
    defaultDiskQuotaBytes: e.MSB_DEFAULT_DISK_QUOTA_MIB * 1024 * 1024,
    defaultRunTimeoutMs: e.MSB_DEFAULT_RUN_TIMEOUT_MS,
    outputCapBytes: e.MSB_OUTPUT_CAP_BYTES,
    consoleLogMaxBytes: e.MSB_CONSOLE_LOG_MAX_BYTES,
    qemuSeccomp: e.MSB_QEMU_SECCOMP === "on",
    vmUidBase: e.MSB_VM_UID_BASE ?? defaultIdBase(msbHome),
    vmUidCount: e.MSB_VM_UID_COUNT,
    vmGidBase: e.MSB_VM_GID_BASE ?? defaultIdBase(msbHome),
    templatesEnabled: e.MSB_TEMPLATES === "1",
    poolSize: e.MSB_TEMPLATES === "1" ? e.MSB_POOL_SIZE : 0,
    templateMemoryMaxMib: e.MSB_TEMPLATE_MEMORY_MAX_MIB,
    templateMemoryNamespaceMaxMib: e.MSB_TEMPLATE_MEMORY_NAMESPACE_MAX_MIB,
    idlePauseMs: e.MSB_IDLE_PAUSE_SECONDS * 1000,
    templatesDir: join(msbHome, "templates"),
    templateMemoryDir:
      e.MSB_TEMPLATE_MEMORY_DIR ??
      join("/dev/shm", `msb-${createHash("sha256").update(msbHome).digest("hex").slice(0, 12)}`),
  };
}
