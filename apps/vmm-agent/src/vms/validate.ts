import { stat } from "node:fs/promises";
import { isAbsolute } from "node:path";
import { MsbError } from "@msb/errors";
import { parseEnv } from "../guest/env.js";
import type { PortForwardSpec } from "../hypervisor/hypervisor.js";
import { probeHostPorts } from "../network/port-probe.js";
import { isValidVmId } from "../supervision/vm-files.js";
import type { Identity } from "../templates/restore.js";
import { checkVolumePath } from "../volumes/held-volume.js";
import type { CreateVmParams } from "./types.js";
import { invalid, type VmContext, type VmRecord } from "./vm-table.js";

/** A create request once checked: what every start path needs from it. */
export interface CheckedCreate {
  readonly volumes: { tag: string; hostPath: string; readOnly: boolean }[];
  readonly mounts: { tag: string; path: string; readonly: boolean }[];
  readonly ports: PortForwardSpec[];
  readonly env: Record<string, string>;
}

/**
 * Checks a create before anything is reserved or started: ids, paths, volumes against the
 * policy (checked again on the held directory at boot), ports (probe-bound last).
 */
export async function validateCreate(
  ctx: VmContext,
  params: CreateVmParams,
): Promise<CheckedCreate> {
  const { options } = ctx;
  if (!isValidVmId(params.vmId)) {
    throw invalid(
      `vm_id '${params.vmId}' must be 'name' or 'namespace/name' (letters, digits, '_', '.', '-').`,
      { vmId: params.vmId },
    );
  }
  if (!isAbsolute(params.rootfsPath)) {
    throw invalid("rootfs_path must be an absolute path (from ImageService.PrepareRootfs).");
  }
  const rootfs = await stat(params.rootfsPath).catch(() => undefined);
  if (rootfs?.isFile() !== true) {
    throw new MsbError(
      "IMAGE_NOT_FOUND",
      `The rootfs ${params.rootfsPath} does not exist. Prepare it with ImageService.PrepareRootfs.`,
      { details: { rootfsPath: params.rootfsPath } },
    );
  }
  if (params.workdir !== "" && !params.workdir.startsWith("/")) {
    throw invalid("workdir must be an absolute guest path.");
  }
  if (params.hostname !== "" && !/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(params.hostname)) {
    throw invalid("hostname must be 1-63 letters, digits, '-' or '.'.");
  }
  const volumes: { tag: string; hostPath: string; readOnly: boolean }[] = [];
  const mounts: { tag: string; path: string; readonly: boolean }[] = [];
  for (const [i, vol] of params.volumes.entries()) {
    if (!isAbsolute(vol.hostPath) || !isAbsolute(vol.guestPath)) {
      throw invalid("Volume host_path and guest_path must be absolute paths.", { volume: i });
    }
    // Refused early here; checked again on the directory held open at boot.
    await checkVolumePath(vol.hostPath, options.volumePolicy);
    const tag = `msbvol${i}`;
    volumes.push({ tag, hostPath: vol.hostPath, readOnly: vol.readOnly });
    mounts.push({ tag, path: vol.guestPath, readonly: vol.readOnly });
  }
  if (params.network === "none" && params.ports.length > 0) {
    throw invalid("Port forwards need a network; this VM's network is 'none'.");
  }
  const ports: PortForwardSpec[] = params.ports.map((p) => {
    const protocol = p.protocol === "" ? "tcp" : p.protocol;
    if (protocol !== "tcp" && protocol !== "udp") {
      throw invalid(`Port protocol must be 'tcp' or 'udp', got '${p.protocol}'.`);
    }
    return {
      protocol,
      hostAddress: p.hostAddress === "" ? "127.0.0.1" : p.hostAddress,
      hostPort: p.hostPort,
      guestPort: p.guestPort,
    };
  });
  const env = parseEnv(params.env, "env");
  // Last: everything else about the request is valid before host ports are touched.
  await probeHostPorts(ports);
  return { volumes, mounts, ports, env };
}

export function memoryOf(ctx: VmContext, params: CreateVmParams): number {
  const { options } = ctx;
  return params.memoryMib > 0 ? params.memoryMib : options.defaultMemoryMib;
}

export function identityOf(
  ctx: VmContext,
  rec: VmRecord,
  params: CreateVmParams,
  checked: CheckedCreate,
  timeoutMs: number,
): Identity {
  const { options } = ctx;
  return {
    hostname: params.hostname !== "" ? params.hostname : (rec.vmId.split("/").pop() ?? ""),
    env: checked.env,
    workdir: params.workdir,
    outputCapBytes: options.outputCapBytes,
    timeoutMs,
  };
}
