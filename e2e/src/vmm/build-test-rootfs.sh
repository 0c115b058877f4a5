#!/usr/bin/env bash
# Builds (once, cached) the erofs rootfs the vmm-agent e2e tests boot: Debian bookworm with
# python3 and nodejs, from the host's own apt sources (no mirror named here).
#
#   ROOTFS=$(e2e/src/vmm/build-test-rootfs.sh)   # last stdout line = the .erofs path
#
# Output: ${MSB_CACHE_DIR:-~/.cache/msb}/e2e/rootfs-<key>.erofs, key = sha256 of this script.
set -euo pipefail
SELF=$(readlink -f "${BASH_SOURCE[0]}")
CACHE=${MSB_CACHE_DIR:-$HOME/.cache/msb}/e2e
KEY=$(sha256sum <"$SELF" | cut -c1-12)
OUT=$CACHE/rootfs-$KEY.erofs
say() { printf '[test-rootfs] %s\n' "$*" >&2; }

if [[ -f $OUT ]]; then echo "$OUT"; exit 0; fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-$KEY"
flock 9
if [[ -f $OUT ]]; then echo "$OUT"; exit 0; fi

for tool in mmdebstrap mkfs.erofs; do
  command -v "$tool" >/dev/null || { say "missing $tool (apt-get install mmdebstrap erofs-utils)"; exit 1; }
done
TMP=$(mktemp -d "$CACHE/.build-XXXXXX")
trap 'rm -rf "$TMP"' EXIT
say "mmdebstrap bookworm + python3, nodejs (about a minute)"
mmdebstrap --quiet --variant=apt --include=python3,nodejs bookworm "$TMP/root" >&2
# Trim what a sandbox never needs; keeps the image small.
rm -rf "$TMP"/root/var/cache/apt/* "$TMP"/root/var/lib/apt/lists/* "$TMP"/root/usr/share/doc/* \
  "$TMP"/root/usr/share/man/* "$TMP"/root/usr/share/locale/*
say "mkfs.erofs (lz4hc)"
mkfs.erofs --quiet -zlz4hc "$TMP/rootfs.erofs" "$TMP/root" >&2
mv "$TMP/rootfs.erofs" "$OUT"
say "done: $OUT ($(du -m "$OUT" | cut -f1) MiB)"
echo "$OUT"
