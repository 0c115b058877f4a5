import { MsbError } from "@msb/errors";
import type { ProcessCredentials } from "../hypervisor.js";

/**
 * QEMU's seccomp filter, installed before the guest runs its first instruction: besides the
 * default deny-list (reboot, swapon, kexec, mount, ...), obsolete system calls, any change of
 * uid/gid/capabilities, fork/execve and scheduler/resource changes are refused. A guest that
 * takes over QEMU (TCG, virtio, slirp and 9p are all emulated inside it) can therefore not
 * start a shell, regain privileges or renice itself. Needs a QEMU built with libseccomp.
 */
export const QEMU_SECCOMP_ARGS: readonly string[] = [
  "-sandbox",
  "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
];

function checkId(name: string, id: number): void {
  if (!Number.isInteger(id) || id < 0 || id >= 0xffff_ffff) {
    throw new MsbError("INVALID_PARAMS", `${name} ${id} is not a valid id.`, {
      details: { [name]: id },
    });
  }
}

/**
 * The command that starts QEMU. Always through `setpriv --pdeathsig KILL` when setpriv is
 * there (QEMU dies with the vmm-agent even on SIGKILL). With `credentials`, setpriv also
 * switches to that uid/gid, sets exactly those supplementary groups, empties the inheritable
 * and bounding capability sets and sets no_new_privs, so nothing QEMU could exec regains
 * privileges. PDEATHSIG survives the switch because setpriv sets it after changing ids.
 *
 * Without setpriv a QEMU that should run unprivileged is refused (VM_BOOT_FAILED): running
 * it as root instead would be a silent downgrade.
 */
export function launcherCommand(
  setpriv: string | undefined,
  credentials: ProcessCredentials | undefined,
  qemu: string,
  qemuArgs: readonly string[],
): [string, string[]] {
  if (setpriv === undefined) {
    if (credentials !== undefined) {
      throw new MsbError(
        "VM_BOOT_FAILED",
        "setpriv (util-linux) is not installed, so QEMU cannot be started as an unprivileged user. Install util-linux.",
      );
    }
    return [qemu, [...qemuArgs]];
  }
  const drop: string[] = [];
  if (credentials !== undefined) {
    checkId("uid", credentials.uid);
    checkId("gid", credentials.gid);
    credentials.groups.forEach((g) => checkId("gid", g));
    drop.push(
      `--reuid=${credentials.uid}`,
      `--regid=${credentials.gid}`,
      // --groups replaces every supplementary group (like --clear-groups) with exactly these.
      credentials.groups.length > 0 ? `--groups=${credentials.groups.join(",")}` : "--clear-groups",
      "--inh-caps=-all",
      "--bounding-set=-all",
      "--no-new-privs",
    );
  }
  return [setpriv, [...drop, "--pdeathsig", "KILL", "--", qemu, ...qemuArgs]];
}
