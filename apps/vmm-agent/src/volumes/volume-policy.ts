import { isAbsolute, resolve, sep } from "node:path";

/**
 * Which host directories a VM may mount. The control plane checks the same rule before it
 * asks; the vmm-agent checks it again on the directory it actually holds (defence in depth:
 * a stored config is replayed, a path can be swapped for a symlink between two checks).
 */
export interface VolumePolicy {
  /** Absolute, resolved roots; a volume must be one of them or inside one. Empty = none. */
  readonly roots: readonly string[];
  /** Never mountable, nor any directory that contains them (MSB_HOME, MSB_CACHE_DIR). */
  readonly denied: readonly string[];
}

function isWithin(path: string, root: string): boolean {
  if (root === sep) return path.startsWith(sep);
  return path === root || path.startsWith(root + sep);
}

/** True when the resolved `path` may be a volume under `policy`. */
export function volumeAllowed(path: string, policy: VolumePolicy): boolean {
  return (
    isAbsolute(path) &&
    policy.roots.some((root) => isWithin(path, root)) &&
    !policy.denied.some((d) => isWithin(path, d) || isWithin(d, path))
  );
}

/**
 * The roots as apps/control-plane/src/config.ts reads them: MSB_VOLUME_ROOTS (colon
 * separated, absolute) when set; otherwise none, except in dev mode (MSB_DEV=1): the
 * user's home and /tmp. Relative entries are dropped here (the control plane refuses them).
 */
export function volumeRootsFrom(
  volumeRoots: string | undefined,
  dev: boolean,
  homeDir: string,
): string[] {
  if (volumeRoots !== undefined) {
    return volumeRoots
      .split(":")
      .filter((p) => p !== "" && isAbsolute(p))
      .map((p) => resolve(p));
  }
  return dev ? [resolve(homeDir), "/tmp"] : [];
}
