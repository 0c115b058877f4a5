/**
 * Sandbox and namespace names (SPEC.md): a letter or digit, then up to 62 letters, digits,
 * `_` or `-`. They become parts of file paths and VM ids, so nothing else is allowed.
 */
export const NAME_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/;

/** The namespace scope of a key that may touch every namespace. */
export const ALL_NAMESPACES = "*";

export function isValidName(value: string): boolean {
  return NAME_PATTERN.test(value);
}
