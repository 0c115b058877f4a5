import type { Duplex } from "node:stream";

/** The CPU virtualisation a VM runs on. */
export type Accelerator = "kvm" | "tcg";

/** The accelerator chosen for this process, and why KVM was not used when it was not. */
export interface AcceleratorChoice {
  readonly accelerator: Accelerator;
  /** Empty when KVM is used; otherwise the reason (probe failure, no /dev/kvm, forced). */
  readonly note: string;
}

/** A TCP or UDP port forward from the host into the guest (QEMU `hostfwd`). */
export interface PortForwardSpec {
  readonly protocol: "tcp" | "udp";
  /** IPv4 literal the host side binds; 127.0.0.1 unless the caller chose otherwise. */
  readonly hostAddress: string;
  readonly hostPort: number;
  readonly guestPort: number;
}

/** The credentials a QEMU process runs with (set by setpriv before exec). */
export interface ProcessCredentials {
  readonly uid: number;
  /** Primary gid; the host firewall matches VMs' sockets by it. */
  readonly gid: number;
  /** Supplementary groups; exactly these, the server's own are dropped. */
  readonly groups: readonly number[];
}

/** A host directory shared with the guest, as a descriptor the caller validated and holds. */
export interface LaunchVolume {
  /** The mount tag the guest agent mounts it by. */
  readonly tag: string;
  /** An open O_DIRECTORY descriptor (volumes/held-volume.ts); the backend never re-opens a path. */
  readonly fd: number;
  readonly readOnly: boolean;
}

/** What a backend needs to boot one VM. */
export interface LaunchSpec {
  readonly vmId: string;
  /** The VM's own directory: sockets, pidfile, console log, scratch disk. */
  readonly dir: string;
  readonly accelerator: Accelerator;
  /** Uncompressed guest kernel (vmlinux). */
  readonly kernelPath: string;
  /** initramfs holding the guest agent (PID 1) and the REPL drivers. */
  readonly initramfsPath: string;
  readonly memoryMib: number;
  readonly vcpus: number;
  /** erofs image; absent only for the accelerator probe. */
  readonly rootfsPath?: string;
  readonly scratchDiskPath?: string;
  /** `undefined` = no network interface. */
  readonly network?: { readonly portForwards: readonly PortForwardSpec[] };
  readonly volumes: readonly LaunchVolume[];
  /**
   * Who the VMM process runs as (see identity/identity.ts); undefined keeps the
   * vmm-agent's own user (not root, or the accelerator probe).
   */
  readonly credentials?: ProcessCredentials;
  /** Guest RAM in this file: shared for a template, private (copy-on-write) for a clone. */
  readonly memoryFile?: { readonly path: string; readonly shared: boolean };
  /** Restore this snapshot state file (see `VmProcess.snapshot`) instead of booting. */
  readonly restoreStatePath?: string;
}

/** How a VM process ended. */
export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
}

/** A running VM process as its backend sees it. */
export interface VmProcess {
  readonly pid: number;
  /** Resolves (never rejects) when the process has exited and its files are gone. */
  readonly exited: Promise<ExitInfo>;
  /** The guest agent's connection; rejects if the VM exits or `signal` aborts before it. */
  connectAgent(signal: AbortSignal): Promise<Duplex>;
  /** The last console lines (kernel and agent messages, QEMU's own errors). */
  consoleTail(maxLines?: number): string[];
  /** Resident memory of the VM process on the host, or undefined once it is gone. */
  hostRssBytes(): Promise<number | undefined>;
  /** Asks the VMM to exit now (QMP `quit`); the guest gets no chance to sync. */
  quit(signal: AbortSignal): Promise<void>;
  /** Sends a signal to the VM process. */
  kill(signal: NodeJS.Signals): void;
  /**
   * Saves the device state to `statePath` (RAM stays in the shared `memoryFile`, which must
   * have been given at launch); the VM is left paused.
   */
  snapshot(statePath: string, signal: AbortSignal): Promise<void>;
  /**
   * The VM's directory was renamed (same filesystem) to `dir`: sockets and pidfile are
   * found there from now on. QEMU keeps its open files and its listening QMP socket.
   */
  relocate(dir: string): void;
  /** Stops the vCPUs (0 % host CPU) or lets them run again. */
  pause(signal: AbortSignal): Promise<void>;
  resume(signal: AbortSignal): Promise<void>;
  /** Adds a port forward to a running VM's user-mode network. */
  addPortForward(fwd: PortForwardSpec, signal: AbortSignal): Promise<void>;
}

/** A VMM backend (QEMU today; libkrun later). */
export interface Hypervisor {
  readonly name: "qemu" | "libkrun";
  /** Version string of the VMM binary or library. */
  version(): Promise<string>;
  /** Spawns a VM; resolves once the process runs (not when the guest is ready). */
  launch(spec: LaunchSpec): Promise<VmProcess>;
}
