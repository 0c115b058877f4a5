#!/usr/bin/env bash
# Nested KVM runner: runs a command inside an "L1" Debian VM that has a working /dev/kvm, on a
# host whose own /dev/kvm cannot run msb's guests. QEMU's TCG emulates AMD SVM, so an L1 booted
# with `-accel tcg -cpu EPYC` running Debian's stock kernel loads kvm-amd and can itself run
# `qemu-system-x86_64 -accel kvm` (the L2 guests are msb's sandboxes).
#
#   tools/kvm-runner/run.sh [--build-only] [--] CMD [ARG...]
#
# CMD runs as root in L1 under bash, in this checkout (same path as on the host), with its
# output streamed here and its exit code returned. In L1: /dev/kvm is 0660 root:kvm (as on a
# real KVM host); the checkout, ${MSB_CACHE_DIR:-~/.cache/msb} and ${MSB_HOME:-~/.msb} are
# shared read-only (9p) at their host paths, each under a writable overlay that is thrown away
# when L1 stops; $MSB_KVM_RUNNER_OUT (a host directory, default a temporary one, kept only when
# set) is shared read-write at the same path so results can come back.
#
# The L1 image (Debian kernel + initramfs, an ext4 root with QEMU and what the server needs,
# node copied from this host) is built once with mmdebstrap and cached by input hash under
# ${MSB_CACHE_DIR:-~/.cache/msb}/kvm-runner/<key>/. Progress goes to stderr.
# Env: MSB_KVM_RUNNER_MEMORY_MIB (default 8192), MSB_KVM_RUNNER_CPUS (default 2),
#      MSB_KVM_RUNNER_OUT, MSB_KVM_RUNNER_TIMEOUT_S (default 5400: the whole L1 run).
#      Passed into L1: CI, MSB_ACCEL, MSB_KVM_BENCH_RUNS, and MSB_KERNEL / MSB_INITRAMFS (found
#      here when unset: their build scripts need host packages L1 lacks).
set -euo pipefail
{
SELF=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SELF")
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${MSB_CACHE_DIR:-$HOME/.cache/msb}
HOME_DIR=${MSB_HOME:-$HOME/.msb}
MEM=${MSB_KVM_RUNNER_MEMORY_MIB:-8192}
CPUS=${MSB_KVM_RUNNER_CPUS:-2}
TIMEOUT_S=${MSB_KVM_RUNNER_TIMEOUT_S:-5400}
T0=$(date +%s)
say() { printf '\033[1m[kvm-runner]\033[0m %s (%ss)\n' "$*" "$(($(date +%s) - T0))" >&2; }
die() { printf '[kvm-runner] ERROR: %s\n' "$*" >&2; exit 125; }

BUILD_ONLY=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --build-only) BUILD_ONLY=1; shift ;;
    --) shift; break ;;
    -h|--help) sed -n '2,20p' "$SELF" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
[[ $BUILD_ONLY == 1 || $# -gt 0 ]] || die "no command given (see --help)"

# Packages of L1: the stock kernel (kvm, kvm-amd, 9p, overlay as modules), QEMU 7.2 as on the
# host, and what the msb server calls (setfacl, setpriv, iptables, ip, mkfs.ext4, mkfs.erofs).
PACKAGES=(
  linux-image-amd64 initramfs-tools kmod busybox udev mount
  qemu-system-x86 acl iproute2 iptables procps util-linux e2fsprogs erofs-utils
  libstdc++6 python3 bash coreutils findutils grep sed gawk tar gzip xz-utils
)
NODE=$(readlink -f "$(command -v node)") || die "node is not on PATH"
NPM_DIR=$(cd "$(dirname "$NODE")/../lib/node_modules/npm" 2>/dev/null && pwd || true)
KEY=$({
  printf '%s\n' "${PACKAGES[@]}"
  cat "$HERE/l1-boot.sh.in"
  sed -n '/^# --- image build ---/,/^# --- end image build ---/p' "$SELF"
  "$NODE" --version
  sha256sum "$NODE" | cut -c1-64
  cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null || true
} | sha256sum | cut -c1-16)
IMG_DIR=$CACHE/kvm-runner/$KEY

# --- image build ---
build_image() {
  command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: run tools/setup.sh (or apt-get install mmdebstrap)"
  local tmp=$IMG_DIR.tmp.$$
  rm -rf "$tmp"
  mkdir -p "$tmp"
  trap 'rm -rf "$tmp"' EXIT
  say "building the L1 image (once; Debian packages with mmdebstrap, a few minutes): $tmp"
  local include
  include=$(IFS=,; echo "${PACKAGES[*]}")
  # Debian's initramfs loads virtio_blk/virtio_pci/ext4 before the root is mounted; MODULES=dep
  # would only list this host's modules, so the default (most) is kept.
  mmdebstrap --variant=apt --mode=root --include="$include" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='chroot "$1" groupadd --system --force kvm' \
    --customize-hook='echo msb-l1 > "$1/etc/hostname"' \
    --customize-hook="install -m 0755 '$NODE' \"\$1/usr/local/bin/node\"" \
    --customize-hook="if [ -n '$NPM_DIR' ]; then mkdir -p \"\$1/usr/local/lib/node_modules\" && cp -a '$NPM_DIR' \"\$1/usr/local/lib/node_modules/npm\" && ln -sf ../lib/node_modules/npm/bin/npx-cli.js \"\$1/usr/local/bin/npx\" && ln -sf ../lib/node_modules/npm/bin/npm-cli.js \"\$1/usr/local/bin/npm\"; fi" \
    --customize-hook="install -m 0755 '$HERE/l1-boot.sh.in' \"\$1/sbin/msb-l1-init\"" \
    --customize-hook='cp -L "$1/vmlinuz" "$1/boot/msb-vmlinuz" && cp -L "$1/initrd.img" "$1/boot/msb-initrd.img"' \
    --customize-hook="cp \"\$1/boot/msb-vmlinuz\" '$tmp/vmlinuz' && cp \"\$1/boot/msb-initrd.img\" '$tmp/initrd.img'" \
    bookworm "$tmp/root" >&2 2> >(grep --line-buffered -E '^I: |^E: |^W: ' >&2)
  say "packing the root filesystem into an ext4 image"
  # Sparse: the size is the room L1 has for sandboxes; the file holds only what is written.
  mke2fs -q -t ext4 -L msb-l1 -d "$tmp/root" "$tmp/rootfs.img" 24G
  rm -rf "$tmp/root"
  mv "$tmp" "$IMG_DIR"
  trap - EXIT
  say "L1 image ready: $IMG_DIR"
}
# --- end image build ---

if [[ ! -f $IMG_DIR/rootfs.img ]]; then
  mkdir -p "$CACHE/kvm-runner"
  exec 9>"$CACHE/kvm-runner/.lock"
  flock 9
  [[ -f $IMG_DIR/rootfs.img ]] || build_image
  flock -u 9
else
  say "L1 image cached: $IMG_DIR"
fi
[[ $BUILD_ONLY == 0 ]] || exit 0

OUT=${MSB_KVM_RUNNER_OUT:-}
RUN=$(mktemp -d "${TMPDIR:-/tmp}/msb-kvm-runner.XXXXXX")
[[ -n $OUT ]] || OUT=$RUN/out
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cleanup() {
  [[ -n ${QEMU_PID:-} ]] && kill "$QEMU_PID" 2>/dev/null || true
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$CACHE" "$HOME_DIR"

# The guest kernel and initramfs, found here: their build scripts key the cache on host
# packages (linux-source-6.1, musl-tools) that L1 does not have.
if [[ -z ${MSB_KERNEL:-} ]]; then
  MSB_KERNEL=$(bash "$REPO/tools/kernel/build.sh" --print-path 2>/dev/null | tail -1) || MSB_KERNEL=
  [[ -f $MSB_KERNEL ]] || MSB_KERNEL=
fi
if [[ -z ${MSB_INITRAMFS:-} ]]; then
  MSB_INITRAMFS=$(bash "$REPO/tools/agent/build.sh" 2>/dev/null | tail -1) || MSB_INITRAMFS=
  [[ -f $MSB_INITRAMFS ]] || MSB_INITRAMFS=
fi
# The command, its environment and the share paths go to L1 as one script in the run dir.
{
  printf 'export MSB_L1_REPO=%q MSB_L1_CACHE=%q MSB_L1_HOME=%q MSB_L1_OUT=%q\n' \
    "$REPO" "$CACHE" "$HOME_DIR" "$OUT"
  for var in CI MSB_ACCEL MSB_KERNEL MSB_INITRAMFS MSB_KVM_BENCH_RUNS; do
    [[ -n ${!var:-} ]] && printf 'export %s=%q\n' "$var" "${!var}"
  done
  printf 'cd %q\n' "$REPO"
  printf '%q ' "$@"
  printf '\n'
} > "$RUN/cmd.sh"
rm -f "$OUT/.rc"
# The host's apt sources: image builds are cached under a key that includes them, so L1 must
# see the same ones to find the host's cached builds (L1 itself has no network to build).
mkdir -p "$RUN/apt"
cp -a /etc/apt/sources.list /etc/apt/sources.list.d "$RUN/apt/" 2>/dev/null || true

share() { # tag path readonly
  printf -- '-fsdev local,id=%s,path=%s,security_model=none%s -device virtio-9p-pci,fsdev=%s,mount_tag=%s ' \
    "$1" "$2" "$([[ $3 == 1 ]] && echo ,readonly=on)" "$1" "$1"
}
# shellcheck disable=SC2046
set -- qemu-system-x86_64 -accel tcg,thread=multi -cpu EPYC -smp "$CPUS" -m "$MEM" \
  -M pc -nodefaults -no-user-config -display none -no-reboot \
  -serial stdio -monitor none \
  -kernel "$IMG_DIR/vmlinuz" -initrd "$IMG_DIR/initrd.img" \
  -append "console=ttyS0 root=/dev/vda rw rootfstype=ext4 init=/sbin/msb-l1-init quiet loglevel=3 panic=-1" \
  -drive "file=$IMG_DIR/rootfs.img,format=raw,if=virtio,snapshot=on,cache=unsafe" \
  -device virtio-rng-pci \
  $(share repo "$REPO" 1) $(share cache "$CACHE" 1) $(share home "$HOME_DIR" 1) \
  $(share run "$RUN" 1) $(share out "$OUT" 0)
say "booting L1 (TCG, -cpu EPYC, ${CPUS} vCPUs, ${MEM} MiB)"
# EPYC names features TCG lacks (rdseed, sha-ni, …); QEMU warns about each twice per vCPU.
timeout "$TIMEOUT_S" "$@" </dev/null 2> >(grep --line-buffered -v "TCG doesn't support requested feature" >&2) &
QEMU_PID=$!
wait "$QEMU_PID"
status=$?
QEMU_PID=
[[ $status != 124 ]] || die "L1 did not finish within ${TIMEOUT_S}s (MSB_KVM_RUNNER_TIMEOUT_S)"
[[ -f $OUT/.rc ]] || die "L1 stopped without reporting an exit code (see the console output above)"
rc=$(cat "$OUT/.rc")
rm -f "$OUT/.rc"
say "L1 command exited with $rc"
exit "$rc"
}
