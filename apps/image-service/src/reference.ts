import { MsbError } from "@msb/errors";

/** Docker Hub's name in normalised references; its API lives at registry-1.docker.io. */
export const DOCKER_HUB = "docker.io";

/** A parsed, normalised image reference (Docker's rules, see docs/conventions.md). */
export interface ImageReference {
  /** `docker.io`, `localhost:5000`, `ghcr.io`, … */
  readonly registry: string;
  /** `library/python`, `microsandbox/python`, … */
  readonly repository: string;
  /** Tag; `latest` when neither tag nor digest was given; undefined for a pure digest ref. */
  readonly tag: string | undefined;
  /** `sha256:<64 hex>` when pinned. */
  readonly digest: string | undefined;
}

// The grammar of github.com/distribution/reference (only sha256 digests are accepted).
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const DOMAIN =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;
const MAX_NAME_LENGTH = 255;

function invalid(input: string, why: string): MsbError {
  return new MsbError(
    "IMAGE_REFERENCE_INVALID",
    `Image reference '${input}' is invalid: ${why}. Use name[:tag] or name@sha256:<64 hex>, optionally with a registry host (localhost:5000/name).`,
    { details: { reference: input, reason: why } },
  );
}

/**
 * Parses `python`, `python:3.12`, `library/python@sha256:…`, `localhost:5000/a/b:tag`.
 * The first path component is a registry when it contains `.` or `:` or is `localhost`
 * (Docker's rule); on Docker Hub a one-component name gets `library/`.
 */
export function parseReference(input: string): ImageReference {
  const raw = input.trim();
  if (raw === "") throw invalid(input, "it is empty");
  if (raw.includes("://")) throw invalid(input, "it must not contain a URL scheme");
  let rest = raw;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at !== -1) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw invalid(input, `digest '${digest}' is not sha256:<64 hex>`);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw invalid(input, `tag '${tag}' is not valid`);
  }
  let registry = DOCKER_HUB;
  let path = rest;
  const slash = rest.indexOf("/");
  if (slash !== -1) {
    const first = rest.slice(0, slash);
    if (first.includes(".") || first.includes(":") || first === "localhost") {
      if (!DOMAIN.test(first)) throw invalid(input, `registry '${first}' is not a host[:port]`);
      registry =
        first === "index.docker.io" || first === "registry-1.docker.io" ? DOCKER_HUB : first;
      path = rest.slice(slash + 1);
    }
  }
  if (path === "") throw invalid(input, "the repository name is empty");
  const components = path.split("/");
  for (const component of components) {
    if (!COMPONENT.test(component)) {
      throw invalid(
        input,
        component === ""
          ? "the repository name has an empty component"
          : `'${component}' is not a valid name component (lowercase letters, digits, and . _ - between them)`,
      );
    }
  }
  if (registry === DOCKER_HUB && components.length === 1) path = `library/${path}`;
  if (registry.length + 1 + path.length > MAX_NAME_LENGTH) {
    throw invalid(input, `the name is longer than ${MAX_NAME_LENGTH} characters`);
  }
  if (tag === undefined && digest === undefined) tag = "latest";
  return { registry, repository: path, tag, digest };
}

/** `registry/repository[:tag][@digest]`: the key of the local store. */
export function formatReference(ref: ImageReference): string {
  const name = `${ref.registry}/${ref.repository}`;
  return `${name}${ref.tag === undefined ? "" : `:${ref.tag}`}${ref.digest === undefined ? "" : `@${ref.digest}`}`;
}

/** The tag or digest to ask the registry for: the digest wins when both are given. */
export function manifestReference(ref: ImageReference): string {
  return ref.digest ?? ref.tag ?? "latest";
}
