#!/usr/bin/env bash
# Boots real microVMs with the guest agent and drives them through the host library:
# hello, configure, exec, timeouts, file ops, Python and Node REPLs, metrics, shutdown, plus
# boot figures (median of N boots). Under TCG here; the same flags run KVM elsewhere.
#
#   tools/agent/vm-smoke.sh [--boots N] [--kernel VMLINUX]
#
# Builds (and caches under ${MSB_CACHE_DIR:-$HOME/.cache/msb}/agent-smoke/) a small Debian
# bookworm rootfs with python3 and nodejs as erofs. Needs root (mmdebstrap into a directory).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cache="${MSB_CACHE_DIR:-$HOME/.cache/msb}"
boots=5
kernel="${MSB_KERNEL:-}"
while (($#)); do
  case "$1" in
    --boots) boots="$2"; shift 2 ;;
    --kernel) kernel="$2"; shift 2 ;;
    *) echo "vm-smoke: unknown argument $1" >&2; exit 2 ;;
  esac
done
log() { echo "vm-smoke: $*" >&2; }

packages="python3,nodejs,ca-certificates"
key="$(printf 'bookworm %s erofs-lz4hc v1' "$packages" | sha256sum | cut -c1-12)"
dir="$cache/agent-smoke"
rootfs="$dir/rootfs-$key.erofs"
if [[ ! -f "$rootfs" ]]; then
  for tool in mmdebstrap mkfs.erofs; do
    command -v "$tool" >/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap erofs-utils >&2 </dev/null; break; }
  done
  log "building the rootfs ($packages)"
  mkdir -p "$dir"
  tree="$dir/rootfs-$key.tmp"
  rm -rf "$tree"
  mmdebstrap --variant=apt --include="$packages" bookworm "$tree" >&2 </dev/null
  rm -rf "$tree"/var/cache/apt/* "$tree"/var/lib/apt/lists/*
  mkfs.erofs -zlz4hc --quiet "$rootfs.tmp" "$tree" >&2
  mv "$rootfs.tmp" "$rootfs"
  rm -rf "$tree"
fi
if [[ -z "$kernel" ]]; then
  # never builds the kernel here (minutes, and maybe already running): it must exist
  kernel="$(bash "$root/tools/kernel/build.sh" --print-path 2>/dev/null | tail -1 || true)"
fi
[[ -f "$kernel" ]] || { log "no guest kernel at '$kernel': run tools/kernel/build.sh first"; exit 1; }
initramfs="$(bash "$here/build.sh" | tail -1)"

log "kernel $kernel"
log "initramfs $initramfs"
log "rootfs $rootfs ($(du -h "$rootfs" | cut -f1))"

cd "$root"
exec node --conditions=@msb/source --import tsx "$here/vm-smoke.ts" \
  --kernel "$kernel" --initramfs "$initramfs" --rootfs "$rootfs" --boots "$boots"
