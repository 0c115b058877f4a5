#!/usr/bin/env bash
# Builds the msb guest agent (static, musl) and the initramfs that carries it.
#
#   tools/agent/build.sh [--json] [--force]
#
# Output, cached by the sha256 of the inputs under ${MSB_CACHE_DIR:-$HOME/.cache/msb}/agent/<key>/:
#   msb-agent        static PID 1 (images/agent/*.c)
#   initramfs.cpio   newc archive: /init (the agent), /msb/repl/* (REPL drivers), base dirs
# The last stdout line is the initramfs path (or, with --json, a JSON object with both paths
# and the key). Progress and errors go to stderr. Installs musl-tools and cpio with apt-get
# when they are missing (needs root; no prompts).
set -euo pipefail

json=0
force=0
for arg in "$@"; do
  case "$arg" in
    --json) json=1 ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown argument $arg" >&2; exit 2 ;;
  esac
done

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
src="$root/images/agent"
cache="${MSB_CACHE_DIR:-$HOME/.cache/msb}/agent"

log() { echo "agent: $*" >&2; }

need=()
command -v musl-gcc >/dev/null 2>&1 || need+=(musl-tools)
command -v cpio >/dev/null 2>&1 || need+=(cpio)
if ((${#need[@]})); then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 </dev/null
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 </dev/null
fi

cflags=(-static -Os -s -std=gnu11 -Wall -Wextra -Werror -ffunction-sections -fdata-sections -Wl,--gc-sections)
inputs=("$src"/*.c "$src"/*.h "$src"/repl/* "$here/build.sh")
key="$( {
  for f in "${inputs[@]}"; do printf '%s\n' "${f#"$root"/}"; sha256sum <"$f"; done
  musl-gcc --version | head -1
  printf '%s\n' "${cflags[@]}"
} | sha256sum | cut -c1-16)"
out="$cache/$key"

if [[ $force == 0 && -f "$out/initramfs.cpio" && -x "$out/msb-agent" ]]; then
  log "cached ($key)"
else
  log "building $key"
  mkdir -p "$cache"
  tmp="$(mktemp -d "$cache/.build-XXXXXX")"
  trap 'rm -rf "$tmp"' EXIT
  musl-gcc "${cflags[@]}" -o "$tmp/msb-agent" "$src"/*.c

  stage="$tmp/stage"
  mkdir -p "$stage"/{dev,proc,sys,mnt,run,tmp,msb/repl}
  install -m 0755 "$tmp/msb-agent" "$stage/init"
  install -m 0644 "$src"/repl/* "$stage/msb/repl/"
  find "$stage" -exec touch -h -d @0 {} +
  (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet >"$tmp/initramfs.cpio")
  mkdir -p "$tmp/out"
  mv "$tmp/msb-agent" "$tmp/initramfs.cpio" "$tmp/out/"
  rm -rf "$out"
  mv "$tmp/out" "$out"
  log "agent $(stat -c %s "$out/msb-agent") bytes, initramfs $(stat -c %s "$out/initramfs.cpio") bytes"
fi

if [[ $json == 1 ]]; then
  printf '{"key":"%s","agent":"%s","initramfs":"%s"}\n' "$key" "$out/msb-agent" "$out/initramfs.cpio"
else
  echo "$out/initramfs.cpio"
fi
