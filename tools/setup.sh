#!/usr/bin/env bash
# Installs and builds everything msb needs on this machine, idempotently and cached:
# Debian packages, npm dependencies, the TypeScript build, the guest kernel and the guest
# agent. Runs as root without a terminal (CI) or as a developer. Progress goes to stderr.
# Usage: tools/setup.sh [--no-guest]   (--no-guest skips kernel and agent builds)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache="${MSB_CACHE_DIR:-$HOME/.cache/msb}"
mkdir -p "$cache"
say() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

# Debian packages, installed only when one is missing.
packages=(
  qemu-system-x86 erofs-utils mmdebstrap docker-registry musl-tools cpio e2fsprogs
  linux-source-6.1 bc flex bison libelf-dev libssl-dev busybox-static build-essential
  ca-certificates python3 iproute2 procps util-linux iptables acl
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    say "missing Debian packages: ${missing[*]} — install them as root: apt-get install ${missing[*]}"
    exit 1
  fi
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  # The docker-registry package starts a system-wide registry on :5000 where an init system
  # runs; msb's tests start their own on a free port, so that one is not needed.
  (systemctl disable --now docker-registry >/dev/null 2>&1 || true)
fi

# npm dependencies: `npm ci` when package-lock.json changed since the last install.
lock_hash=$(sha256sum package-lock.json | cut -c1-16)
if [ "$(cat node_modules/.msb-lock 2>/dev/null)" != "$lock_hash" ]; then
  say "npm ci (native modules are compiled from source here; this takes a few minutes)"
  npm ci --no-audit --no-fund --loglevel=error >&2
  echo "$lock_hash" > node_modules/.msb-lock
fi

say "building TypeScript"
npx tsc -b tsconfig.json >&2

if [ "${1:-}" != "--no-guest" ]; then
  for step in kernel agent; do
    if [ -x "tools/$step/build.sh" ]; then
      say "guest $step"
      bash "tools/$step/build.sh" >/dev/null
    fi
  done
  if [ -x tools/images/build-all.sh ]; then
    say "images microsandbox/python and microsandbox/node (MSB_HOME=${MSB_HOME:-$HOME/.msb})"
    bash tools/images/build-all.sh >/dev/null
  fi
fi
say "ready"
