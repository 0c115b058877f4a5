import { MsbError } from "@msb/errors";
import type { Accelerator, PortForwardSpec } from "../hypervisor.js";
import { QEMU_SECCOMP_ARGS } from "./sandboxing.js";

/** A host directory shared with the guest over 9p; the guest mounts it by `tag`. */
export interface VolumeSpec {
  readonly tag: string;
  readonly hostPath: string;
  readonly readOnly: boolean;
}

/** Everything that decides a QEMU command line; the builder adds nothing that is not here. */
export interface QemuCommandSpec {
  readonly accelerator: Accelerator;
  /** TCG translation-cache size; ignored under KVM. */
  readonly tcgTbSizeMib: number;
  readonly memoryMib: number;
  readonly vcpus: number;
  /** Uncompressed vmlinux, booted through PVH. */
  readonly kernelPath: string;
  readonly initramfsPath: string;
  /** Becomes /dev/vda (read-only). Absent for the accelerator probe. */
  readonly rootfsPath?: string;
  /** Becomes /dev/vdb (ext4, formatted by the host). */
  readonly scratchDiskPath?: string;
  /** Unix socket the host listens on; QEMU connects to it as the `msb.agent` port. */
  readonly agentSocketPath: string;
  /** Unix socket QEMU listens on for QMP. */
  readonly qmpSocketPath: string;
  /** `undefined` means no network interface at all. */
  readonly network?: { readonly portForwards: readonly PortForwardSpec[] };
  readonly volumes: readonly VolumeSpec[];
  /** QEMU's seccomp filter (see sandboxing.ts); off only for QEMU builds without libseccomp. */
  readonly seccomp: boolean;
  /**
   * Descriptors QEMU inherits, each registered as fd set `set` (`-add-fd`), so that a drive
   * can be `/dev/fdset/<set>`: QEMU then needs no permission on the file or its directories.
   */
  readonly fdSets?: readonly { readonly fd: number; readonly set: number }[];
  /**
   * Guest RAM in a file (`memory-backend-file`) instead of anonymous memory: `shared` for a
   * template (the snapshot's RAM is the file itself, `x-ignore-shared`), private for a clone
   * (a copy-on-write mapping: the template file is never written).
   */
  readonly memoryFile?: { readonly path: string; readonly shared: boolean };
  /** Start waiting for a snapshot (`-incoming defer`; the host sends `migrate-incoming`). */
  readonly incoming?: boolean;
}

/**
 * Kernel command line. `console=ttyS0` feeds the console log; `panic=-1` + `reboot=t` with
 * QEMU's `-no-reboot` turn a guest panic or power-off (there is no ACPI) into a QEMU exit.
 */
export const KERNEL_CMDLINE = "console=ttyS0 quiet panic=-1 reboot=t";

/** QEMU option values are comma-separated: a literal comma in a path is written twice. */
export function escapeOptionValue(value: string): string {
  return value.replaceAll(",", ",,");
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
const MOUNT_TAG = /^[A-Za-z0-9_-]{1,31}$/;

function invalid(message: string, details: Record<string, unknown>): MsbError {
  return new MsbError("INVALID_PARAMS", message, { details });
}

function checkSpec(spec: QemuCommandSpec): void {
  if (!Number.isInteger(spec.memoryMib) || spec.memoryMib < 64) {
    throw invalid(`memory_mib must be at least 64, got ${spec.memoryMib}.`, {
      memoryMib: spec.memoryMib,
    });
  }
  if (!Number.isInteger(spec.vcpus) || spec.vcpus < 1 || spec.vcpus > 255) {
    throw invalid(`vcpus must be between 1 and 255, got ${spec.vcpus}.`, { vcpus: spec.vcpus });
  }
  const seen = new Set<string>();
  for (const fwd of spec.network?.portForwards ?? []) {
    for (const port of [fwd.hostPort, fwd.guestPort]) {
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw invalid(`Port ${port} is out of range (1-65535).`, { port });
      }
    }
    if (!IPV4.test(fwd.hostAddress)) {
      throw invalid(`host_address must be an IPv4 address, got '${fwd.hostAddress}'.`, {
        hostAddress: fwd.hostAddress,
      });
    }
    const key = `${fwd.protocol}:${fwd.hostAddress}:${fwd.hostPort}`;
    if (seen.has(key)) throw invalid(`Host port ${key} is forwarded twice.`, { port: key });
    seen.add(key);
  }
  const limit = maxVolumes(spec.network !== undefined);
  if (spec.volumes.length > limit) {
    throw invalid(
      `At most ${limit} volumes fit in a VM${spec.network === undefined ? "" : " with a network"} (microvm has seven device slots).`,
      { volumes: spec.volumes.length, max: limit },
    );
  }
  const tags = new Set<string>();
  for (const vol of spec.volumes) {
    if (!MOUNT_TAG.test(vol.tag) || tags.has(vol.tag)) {
      throw invalid(`Volume tag '${vol.tag}' is invalid or repeated.`, { tag: vol.tag });
    }
    tags.add(vol.tag);
  }
}

/**
 * virtio-mmio transports of `-M microvm` without ACPI: `virtio-mmio-bus.N` has IRQ 5 + N. The
 * kernel probes them from the highest bus down, which fixes device names (vda before vdb).
 * Bus 3 is IRQ 8, the RTC's (`rtc=on`): a device there fails to probe ("Flags mismatch irq 8"),
 * so it is never used. That leaves seven transports for every device of a VM.
 */
const BUS = { agent: 7, rootfs: 6, scratch: 5, rng: 4 } as const;
const FREE_BUSES: readonly number[] = [2, 1, 0];
const RTC_BUS = 3;

/** How many 9p volumes fit on the transports left (fewer when there is a network device). */
export function maxVolumes(withNetwork: boolean): number {
  return FREE_BUSES.length - (withNetwork ? 1 : 0);
}

/**
 * Builds the argv (without the binary) of one microVM. Pure: the same spec always gives the
 * same line, so every device decision is unit-tested here.
 */
export function buildQemuArgs(spec: QemuCommandSpec): string[] {
  checkSpec(spec);
  const e = escapeOptionValue;
  const bus = (n: number): string => `bus=virtio-mmio-bus.${n}`;
  // The guest kernel has no ACPI; with acpi=off QEMU appends the virtio_mmio.device= list
  // to the kernel command line, which is how the guest finds its devices.
  const machine = "microvm,rtc=on,acpi=off";
  const args: string[] = [
    "-M",
    spec.memoryFile === undefined ? machine : `${machine},memory-backend=mem`,
  ];
  if (spec.seccomp) args.push(...QEMU_SECCOMP_ARGS);

  if (spec.accelerator === "kvm") {
    args.push("-accel", "kvm", "-cpu", "host");
  } else {
    args.push("-accel", `tcg,tb-size=${spec.tcgTbSizeMib}`, "-cpu", "max");
  }

  if (spec.memoryFile !== undefined) {
    const share = spec.memoryFile.shared ? "on" : "off";
    args.push(
      "-object",
      `memory-backend-file,id=mem,size=${spec.memoryMib}M,mem-path=${e(spec.memoryFile.path)},share=${share}`,
    );
  }
  args.push(
    "-m",
    String(spec.memoryMib),
    "-smp",
    String(spec.vcpus),
    "-nodefaults",
    "-no-user-config",
    "-nographic",
    "-no-reboot",
    // The console goes to QEMU's stdout, which the vmm-agent reads: it caps the log file
    // (a guest can print forever) and keeps the last lines for error messages.
    "-serial",
    "stdio",
    "-kernel",
    spec.kernelPath,
    "-initrd",
    spec.initramfsPath,
    "-append",
    KERNEL_CMDLINE,
    "-qmp",
    `unix:${e(spec.qmpSocketPath)},server=on,wait=off`,
    "-device",
    `virtio-serial-device,${bus(BUS.agent)}`,
    // No server=on: the host listens, QEMU connects, so the host sees the guest from its first byte.
    "-chardev",
    `socket,id=agent,path=${e(spec.agentSocketPath)}`,
    "-device",
    "virtserialport,chardev=agent,name=msb.agent",
  );

  for (const { fd, set } of spec.fdSets ?? []) {
    if (!Number.isInteger(fd) || fd < 3 || !Number.isInteger(set) || set < 0) {
      throw invalid(`fd ${fd} / fd set ${set} cannot be passed to QEMU.`, { fd, set });
    }
    args.push("-add-fd", `fd=${fd},set=${set}`);
  }

  const free = [...FREE_BUSES];
  if (spec.rootfsPath !== undefined) {
    args.push(
      "-drive",
      `id=rootfs,file=${e(spec.rootfsPath)},format=raw,if=none,readonly=on`,
      "-device",
      `virtio-blk-device,drive=rootfs,${bus(BUS.rootfs)}`,
    );
  } else {
    free.push(BUS.rootfs);
  }
  if (spec.scratchDiskPath !== undefined) {
    // discard=unmap: blocks the guest frees become holes again in the sparse file.
    args.push(
      "-drive",
      `id=scratch,file=${e(spec.scratchDiskPath)},format=raw,if=none,discard=unmap`,
      "-device",
      `virtio-blk-device,drive=scratch,${bus(BUS.scratch)}`,
    );
  } else {
    free.push(BUS.scratch);
  }
  args.push("-device", `virtio-rng-device,${bus(BUS.rng)}`);

  if (spec.network !== undefined) {
    const fwds = spec.network.portForwards.map(
      (f) => `,hostfwd=${f.protocol}:${f.hostAddress}:${f.hostPort}-:${f.guestPort}`,
    );
    args.push(
      "-netdev",
      `user,id=net0${fwds.join("")}`,
      "-device",
      `virtio-net-device,netdev=net0,${bus(free.shift() ?? RTC_BUS)}`,
    );
  }

  spec.volumes.forEach((vol, i) => {
    // mapped-xattr: the guest's owners, modes, device nodes and symlinks are kept in xattrs
    // instead of being applied to the host, so untrusted code (root in the guest) cannot
    // plant a setuid binary, a device node or a symlink in a host directory.
    const ro = vol.readOnly ? ",readonly=on" : "";
    args.push(
      "-fsdev",
      `local,id=fs${i},path=${e(vol.hostPath)},security_model=mapped-xattr,multidevs=remap${ro}`,
      "-device",
      `virtio-9p-device,fsdev=fs${i},mount_tag=${vol.tag},${bus(free.shift() ?? RTC_BUS)}`,
    );
  });

  // A transport left over carries the balloon, so a VM that once used its RAM can hand
  // freed pages back to the host.
  const spare = free.shift();
  if (spare !== undefined) {
    args.push("-device", `virtio-balloon-device,free-page-reporting=on,${bus(spare)}`);
  }
  if (spec.incoming === true) args.push("-incoming", "defer");
  return args;
}
