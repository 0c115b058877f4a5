import { MsbError } from "@msb/errors";
import { ALL_NAMESPACES } from "@msb/keys";

/** Who is calling, as far as the sandbox service cares: which namespaces they may touch. */
export interface Caller {
  /** The one namespace the caller may touch, or `"*"` for all. */
  readonly scope: string;
  /** Safe to log: the key id (`jti`), or `"dev"` when auth is off. Never the key itself. */
  readonly id: string;
}

/** The caller of a server started with `--dev`: no key, every namespace. */
export const DEV_CALLER: Caller = { scope: ALL_NAMESPACES, id: "dev" };

export function mayAccess(caller: Caller, namespace: string): boolean {
  return caller.scope === ALL_NAMESPACES || caller.scope === namespace;
}

/** Throws AUTH_FORBIDDEN when a namespace-bound key reaches for another namespace. */
export function assertMayAccess(caller: Caller, namespace: string): void {
  if (mayAccess(caller, namespace)) return;
  throw new MsbError(
    "AUTH_FORBIDDEN",
    `This API key is bound to namespace '${caller.scope}' and cannot touch namespace '${namespace}'. Use a key for '${namespace}' or an all-namespaces key ('msb server keygen' without --namespace).`,
    { details: { namespace, keyNamespace: caller.scope } },
  );
}
