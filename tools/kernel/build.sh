#!/usr/bin/env bash
# Build (or find in the cache) the msb guest kernel: an uncompressed x86_64 vmlinux
# bootable through PVH by `qemu-system-x86_64 -M microvm -kernel vmlinux`.
#
#   KERNEL=$(tools/kernel/build.sh)        # last stdout line = absolute vmlinux path
#   tools/kernel/build.sh --print-path     # where it would be; does not build
#   tools/kernel/build.sh --json           # last line {"path":..,"key":..,"cached":..,"seconds":..}
#
# Inputs: images/kernel/config-fragment on top of `make tinyconfig`, Debian's
# linux-source-6.1. Output: ${MSB_CACHE_DIR:-$HOME/.cache/msb}/kernel/<key>/{vmlinux,.config,build.log}
# with key = sha256(fragment, this script, linux-source-6.1 version).
# Progress goes to stderr; only the result goes to stdout.
# Env: MSB_CACHE_DIR, MSB_KERNEL_JOBS (default: nproc).
set -euo pipefail
# The whole script is one { ... } block: bash parses it completely before running, so editing
# or checking out this file during a build cannot corrupt the running build.
{
SRC_PKG=linux-source-6.1
SRC_TARBALL=/usr/src/linux-source-6.1.tar.xz
# Roughly how many "  CC/AS/LD/..." lines a full build prints (measured); used for a % estimate.
EXPECTED_STEPS=1625

SELF=$(readlink -f "${BASH_SOURCE[0]}")
REPO=$(cd "$(dirname "$SELF")/../.." && pwd)
FRAGMENT=$REPO/images/kernel/config-fragment
CACHE_ROOT=${MSB_CACHE_DIR:-$HOME/.cache/msb}/kernel

MODE=build
JSON=0
for arg in "$@"; do
  case $arg in
    --print-path) MODE=print ;;
    --json) JSON=1 ;;
    -h|--help) sed -n '2,13p' "$SELF" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

T0=$(date +%s.%N)
say() { printf '[kernel] %s\n' "$*" >&2; }
die() { printf '[kernel] ERROR: %s\n' "$*" >&2; exit 1; }
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

emit() { # $1=path $2=cached(true|false)
  if [[ $JSON == 1 ]]; then
    printf '{"path":"%s","key":"%s","cached":%s,"seconds":%s}\n' "$1" "$KEY" "$2" "$(elapsed)"
  else
    printf '%s\n' "$1"
  fi
}

[[ -f $FRAGMENT ]] || die "missing $FRAGMENT"

# ---- dependencies --------------------------------------------------------------------------
apt_install() {
  local sudo=()
  if [[ $(id -u) != 0 ]]; then
    command -v sudo >/dev/null && sudo -n true 2>/dev/null && sudo=(sudo -n) ||
      die "need root (or passwordless sudo) to install: $*"
  fi
  say "installing with apt-get: $*"
  export DEBIAN_FRONTEND=noninteractive
  if ! "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@" </dev/null >&2; then
    say "apt-get install failed; running apt-get update and retrying"
    "${sudo[@]}" apt-get update -q </dev/null >&2 || true
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "$@" </dev/null >&2 ||
      die "apt-get install $* failed"
  fi
}

src_version() { dpkg-query -W -f='${Status} ${Version}\n' "$SRC_PKG" 2>/dev/null |
  awk '$3 == "installed" {print $4}'; }

VERSION=$(src_version)
if [[ -z $VERSION || ! -f $SRC_TARBALL ]]; then
  if [[ $MODE == print ]]; then
    # Report where the kernel would be for the version apt would install; don't install.
    VERSION=$(apt-cache policy "$SRC_PKG" 2>/dev/null | awk '/Candidate:/ {print $2}')
    [[ -n $VERSION && $VERSION != "(none)" ]] || die "$SRC_PKG is neither installed nor available"
  else
    apt_install "$SRC_PKG"
    VERSION=$(src_version)
    [[ -n $VERSION && -f $SRC_TARBALL ]] || die "$SRC_PKG did not provide $SRC_TARBALL"
  fi
fi

KEY=$( { sha256sum <"$FRAGMENT"; sha256sum <"$SELF"; printf '%s %s\n' "$SRC_PKG" "$VERSION"; } |
  sha256sum | cut -c1-16)
OUT=$CACHE_ROOT/$KEY

if [[ $MODE == print ]]; then emit "$OUT/vmlinux" "$([[ -f $OUT/vmlinux ]] && echo true || echo false)"; exit 0; fi
if [[ -f $OUT/vmlinux ]]; then emit "$OUT/vmlinux" true; exit 0; fi

# ---- build -------------------------------------------------------------------------------
mkdir -p "$CACHE_ROOT"
# One builder per key; a concurrent caller waits, then finds the result.
exec 9>"$CACHE_ROOT/.lock-$KEY"
if ! flock -n 9; then
  say "another build of $KEY is running; waiting for it"
  flock 9
fi
if [[ -f $OUT/vmlinux ]]; then emit "$OUT/vmlinux" true; exit 0; fi

# We hold the lock for this key, so any <key>.tmp.* left here is from a build that died.
for d in "$CACHE_ROOT/$KEY".tmp.*; do
  [[ -d $d ]] || continue
  say "removing leftover $d"; rm -rf "$d"
done

need=()
for tool in make:make gcc:gcc bc:bc flex:flex bison:bison cpio:cpio xz:xz-utils perl:perl readelf:binutils; do
  command -v "${tool%%:*}" >/dev/null || need+=("${tool#*:}")
done
for pkg in libelf-dev libssl-dev libc6-dev; do
  dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q ' installed$' || need+=("$pkg")
done
[[ ${#need[@]} == 0 ]] || apt_install "${need[@]}"

free_kb=$(df -Pk "$CACHE_ROOT" | awk 'NR==2 {print $4}')
(( free_kb > 3 * 1024 * 1024 )) || say "warning: less than 3 GiB free under $CACHE_ROOT; the build needs ~2.5 GiB"

TMP=$CACHE_ROOT/$KEY.tmp.$$
LOG=$TMP/build.log
MAKE_PGID=
cleanup() {
  local rc=$?
  if [[ -n $MAKE_PGID ]]; then kill -TERM -- "-$MAKE_PGID" 2>/dev/null || true; fi
  if [[ -d $TMP ]]; then
    if [[ $rc != 0 && -f $LOG ]]; then
      cp -f "$LOG" "$CACHE_ROOT/$KEY.failed.log" 2>/dev/null &&
        say "full log kept in $CACHE_ROOT/$KEY.failed.log"
    fi
    rm -rf "$TMP"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail_with_log() {
  say "$1 — last 40 lines of the log:"
  tail -n 40 "$LOG" | sed 's/^/    /' >&2
  die "$1"
}

mkdir -p "$TMP"
: >"$LOG"
say "building kernel $KEY ($SRC_PKG $VERSION) in $TMP"

say "phase 1/5: extracting $SRC_TARBALL"
# Progress: tar reports every 10k records (of 10 KiB); xz -l knows the total.
records=$(xz -l --robot "$SRC_TARBALL" 2>/dev/null | awk '/^totals/ {printf "%d", $5 / 10240}')
tar -xf "$SRC_TARBALL" -C "$TMP" --checkpoint=10000 --checkpoint-action=echo="%u" 2>&1 |
  awk -v total="${records:-133000}" '
    /^tar: [0-9]+$/ { printf "[kernel]   extracting %d%%\n", 100 * $2 / total; fflush(); next }
    { print; fflush() }' >&2
SRC=$TMP/src
mv "$TMP/linux-source-6.1" "$SRC"
say "  extracted in $(elapsed)s"

mk() { make -C "$SRC" ARCH=x86_64 "$@"; }
# Reproducible identification: the banner's date is the source tarball's.
export KBUILD_BUILD_USER=msb KBUILD_BUILD_HOST=msb KBUILD_BUILD_VERSION=1 \
  KBUILD_BUILD_TIMESTAMP="$(date -u -R -r "$SRC_TARBALL")"

say "phase 2/5: configuring (tinyconfig + config-fragment + olddefconfig)"
{
  mk tinyconfig &&
    (cd "$SRC" && scripts/kconfig/merge_config.sh -m -O . .config "$FRAGMENT") &&
    mk olddefconfig
} >>"$LOG" 2>&1 || fail_with_log "configuration failed"

# Every CONFIG_X=v line of the fragment must survive; every "is not set" line must stay off.
check_config() {
  local cfg=$1 bad
  bad=$(awk '
    FNR == NR {
      if (match($0, /^CONFIG_[A-Za-z0-9_]+=/)) { have[substr($0, 1, RLENGTH - 1)] = substr($0, RLENGTH + 1) }
      next
    }
    /^CONFIG_[A-Za-z0-9_]+=/ {
      n = index($0, "="); k = substr($0, 1, n - 1); v = substr($0, n + 1)
      if (!(k in have)) print "  " k "=" v "  (dropped: missing dependency?)"
      else if (have[k] != v) print "  " k "=" v "  (got " have[k] ")"
      next
    }
    /^# CONFIG_[A-Za-z0-9_]+ is not set/ {
      k = $2; if ((k in have) && have[k] != "n") print "  " k " should be off (got " have[k] ")"
    }' "$cfg" "$FRAGMENT")
  if [[ -n $bad ]]; then
    printf '[kernel] options requested in %s but not in the final .config:\n%s\n' "$FRAGMENT" "$bad" >&2
    return 1
  fi
}
check_config "$SRC/.config" || die "config fragment not fully applied (see above); fix images/kernel/config-fragment"
say "  config ok: all $(grep -c '^CONFIG_' "$FRAGMENT") requested options present"

JOBS=${MSB_KERNEL_JOBS:-$(nproc)}
say "phase 3/5: compiling vmlinux with -j$JOBS (takes ~5 min on 2 cores; log: $LOG)"
# Progress: one line per 100 build steps or 30 s (bash `read` is unbuffered, unlike mawk).
progress() {
  local n=0 last=$SECONDS line pct
  while IFS= read -r line; do
    [[ $line =~ ^\ \ [A-Z][A-Z0-9_]*\ +[^\ ] ]] || continue
    n=$((n + 1))
    if ((n % 100 == 0 || SECONDS - last >= 30)); then
      pct=$((100 * n / EXPECTED_STEPS)); ((pct > 99)) && pct=99
      printf '[kernel]   %d build steps (~%d%%), %ds\n' "$n" "$pct" "$SECONDS" >&2
      last=$SECONDS
    fi
  done
  printf '[kernel]   %d build steps done, %ds\n' "$n" "$SECONDS" >&2
}
export -f progress
export EXPECTED_STEPS
set +e
# Own process group (setsid) so that an interrupted build.sh can stop make and all compilers.
setsid -w bash -c 'set -o pipefail; SECONDS=0
  make -C "$1" ARCH=x86_64 -j"$2" vmlinux 2>&1 | tee -a "$3" | progress' _ "$SRC" "$JOBS" "$LOG" &
MAKE_PGID=$!
wait "$MAKE_PGID"
rc=$?
MAKE_PGID=
set -e
[[ $rc == 0 ]] || fail_with_log "make vmlinux failed (exit $rc)"

say "phase 4/5: verifying"
[[ -s $SRC/vmlinux ]] || fail_with_log "make succeeded but produced no vmlinux"
check_config "$SRC/.config" || die "final .config lost requested options"
readelf -n "$SRC/vmlinux" 2>/dev/null | grep -q '^  Xen ' || die "vmlinux has no PVH (Xen ELF note) entry point"
cp "$SRC/vmlinux" "$TMP/vmlinux"
cp "$SRC/.config" "$TMP/.config"

say "phase 5/5: cleaning up the source tree and publishing"
rm -rf "$SRC"
mv -T "$TMP" "$OUT"
rm -f "$CACHE_ROOT/$KEY.failed.log"
say "done in $(elapsed)s: $OUT/vmlinux ($(du -m "$OUT/vmlinux" | cut -f1) MiB)"
emit "$OUT/vmlinux" false
exit 0
}
