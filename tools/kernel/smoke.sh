#!/usr/bin/env bash
# Boot the msb guest kernel under QEMU microvm (TCG) with every device msb uses and run a
# checklist from a tiny busybox initramfs. Exit status 0 only if every check passes.
#
#   tools/kernel/smoke.sh                 # builds/finds the kernel with tools/kernel/build.sh
#   tools/kernel/smoke.sh --kernel PATH   # use this vmlinux
#   tools/kernel/smoke.sh --runs 5        # boot 5 times, report each time and the median
#   tools/kernel/smoke.sh -v              # also print the guest console
# Env: QEMU (default qemu-system-x86_64), MSB_SMOKE_ACCEL (default "tcg -cpu max"),
#      MSB_SMOKE_TIMEOUT (seconds per boot, default 120), MSB_SMOKE_CMDLINE (kernel cmdline).
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
HERE=$(dirname "$SELF")
KERNEL=
RUNS=1
VERBOSE=0
while (($#)); do
  case $1 in
    --kernel) KERNEL=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    -v|--verbose) VERBOSE=1; shift ;;
    -h|--help) sed -n '2,11p' "$SELF" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "smoke.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
QEMU=${QEMU:-qemu-system-x86_64}
read -r -a ACCEL <<<"${MSB_SMOKE_ACCEL:-tcg -cpu max}"
TIMEOUT=${MSB_SMOKE_TIMEOUT:-120}

say() { printf '[smoke] %s\n' "$*" >&2; }
die() { printf '[smoke] ERROR: %s\n' "$*" >&2; exit 1; }

# ---- host tools ---------------------------------------------------------------------------
need=()
command -v "$QEMU" >/dev/null || need+=(qemu-system-x86)
[[ -x /bin/busybox ]] && /bin/busybox --list 2>/dev/null | grep -qx mount || need+=(busybox-static)
command -v mkfs.erofs >/dev/null || need+=(erofs-utils)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v cpio >/dev/null || need+=(cpio)
if ((${#need[@]})); then
  [[ $(id -u) == 0 ]] || die "missing ${need[*]}; install them (apt-get install ${need[*]})"
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${need[@]}" </dev/null >&2 ||
    { apt-get update -q </dev/null >&2; apt-get install -y -q --no-install-recommends "${need[@]}" </dev/null >&2; }
fi
ldd /bin/busybox >/dev/null 2>&1 && die "/bin/busybox is dynamically linked; install busybox-static"

if [[ -z $KERNEL ]]; then KERNEL=$("$HERE/build.sh" | tail -n 1); fi
[[ -f $KERNEL ]] || die "no kernel at $KERNEL"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/msb-kernel-smoke.XXXXXX")
QPID=
cleanup() {
  [[ -n $QPID ]] && kill "$QPID" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# ---- initramfs ----------------------------------------------------------------------------
mkdir -p "$WORK"/initrd/{bin,dev,proc,sys,tmp,mnt,run}
cp /bin/busybox "$WORK/initrd/bin/busybox"
for applet in $(/bin/busybox --list); do
  [[ $applet == busybox ]] || ln -s busybox "$WORK/initrd/bin/$applet"
done
cat >"$WORK/initrd/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t devtmpfs dev /dev
exec </dev/console >/dev/console 2>&1
echo "MSB-INIT start"
mount -t proc proc /proc
mount -t sysfs sys /sys
pass=0; fail=0
check() { # name, command...
  name=$1; shift
  if out=$("$@" 2>&1); then pass=$((pass+1)); echo "CHECK ok   $name"
  else fail=$((fail+1)); echo "CHECK FAIL $name: $(echo "$out" | tail -n 3 | tr '\n' ' ')"; fi
}
mkdir -p /mnt/lower /mnt/scratch /mnt/root /mnt/vol /dev/pts /dev/shm /sys/fs/cgroup
check "devpts + /dev/ptmx" sh -c 'mount -t devpts -o ptmxmode=0666 devpts /dev/pts && [ -c /dev/ptmx ]'
check "tmpfs /dev/shm" sh -c 'mount -t tmpfs -o mode=1777 shm /dev/shm && echo x >/dev/shm/sem.t && [ -f /dev/shm/sem.t ]'
check "erofs (lz4) rootfs ro" sh -c 'd=$(disk msb-rootfs) && mount -t erofs -o ro "$d" /mnt/lower && grep -q hello-from-erofs /mnt/lower/etc/hello'
check "ext4 scratch rw" sh -c 'd=$(disk msb-scratch) && mount -t ext4 "$d" /mnt/scratch && mkdir -p /mnt/scratch/upper /mnt/scratch/work && echo w >/mnt/scratch/upper/w && sync'
check "overlay erofs+ext4" sh -c 'mount -t overlay -o lowerdir=/mnt/lower,upperdir=/mnt/scratch/upper,workdir=/mnt/scratch/work overlay /mnt/root && grep -q hello-from-erofs /mnt/root/etc/hello && echo changed >/mnt/root/etc/hello && grep -q changed /mnt/root/etc/hello && grep -q hello-from-erofs /mnt/lower/etc/hello'
check "9p vol0 rw" sh -c 'mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 vol0 /mnt/vol && grep -q hello-from-host /mnt/vol/host.txt && echo hello-from-guest >/mnt/vol/guest.txt'
check "virtio-serial /dev/vport* named msb.agent" sh -c 'ls /dev/vport* >/dev/null && grep -qx msb.agent /sys/class/virtio-ports/*/name'
check "eth0 up" sh -c '[ -e /sys/class/net/eth0 ] && ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip link set lo up'
check "cgroup2 memory+pids+cpu" sh -c 'mount -t cgroup2 cgroup2 /sys/fs/cgroup && c=$(cat /sys/fs/cgroup/cgroup.controllers) && for x in memory pids cpu; do echo " $c " | grep -q " $x " || { echo "controllers: $c"; exit 1; }; done && echo "+memory +pids +cpu" >/sys/fs/cgroup/cgroup.subtree_control && mkdir /sys/fs/cgroup/t && echo 10 >/sys/fs/cgroup/t/pids.max && echo 64M >/sys/fs/cgroup/t/memory.max'
check "nproc = 2" sh -c 'n=$(nproc); [ "$n" = 2 ] || { echo "nproc=$n"; exit 1; }'
check "MemTotal ~ 256M" sh -c 'm=$(awk "/^MemTotal/ {print \$2}" /proc/meminfo); echo "MemTotal=${m}kB"; [ "$m" -gt 200000 ] && [ "$m" -le 262144 ]'
check "/dev/hwrng (virtio-rng)" sh -c '[ -c /dev/hwrng ] && grep -q virtio /sys/class/misc/hw_random/rng_current && [ "$(dd if=/dev/hwrng bs=16 count=1 2>/dev/null | wc -c)" = 16 ]'
check "virtio-balloon bound" sh -c 'ls /sys/bus/virtio/drivers/virtio_balloon | grep -q virtio'
check "namespaces (unshare)" sh -c 'unshare -m -u -i -n -p -f -U true'
# x86 reads the CMOS clock directly at boot. /dev/rtc0 (rtc_cmos) is only there with <= 4
# virtio devices: without ACPI microvm puts virtio-mmio on IRQs 12..5 and the 5th device
# takes the RTC's IRQ 8 (see images/kernel/README.md).
check "wall clock from CMOS RTC" sh -c 'y=$(date +%Y); echo "year $y"; [ "$y" -ge 2024 ]'
echo "INFO cmdline: $(cat /proc/cmdline)"
grep -E 'virtio|rtc|ttyS' /proc/interrupts | sed 's/^/INFO irq: /'
echo "INFO rtc: $(ls /dev/rtc* 2>&1) date=$(date -u +%FT%T)"
echo "MSB-SMOKE done pass=$pass fail=$fail"
sync
umount /mnt/root /mnt/scratch /mnt/lower /mnt/vol 2>/dev/null
# No ACPI: poweroff would only halt. reboot=t triple-faults and QEMU -no-reboot exits.
reboot -f
INIT
cat >"$WORK/initrd/bin/disk" <<'DISK'
#!/bin/sh
# prints the virtio-blk device whose serial (QEMU -device virtio-blk-device,serial=) is $1
for b in /sys/block/vd*; do
  [ "$(cat "$b/serial" 2>/dev/null)" = "$1" ] && { echo "/dev/${b##*/}"; exit 0; }
done
exit 1
DISK
chmod +x "$WORK/initrd/init" "$WORK/initrd/bin/disk"
(cd "$WORK/initrd" && find . | cpio -o -H newc --quiet) >"$WORK/initrd.cpio"

# ---- disks and shares -------------------------------------------------------------------
mkdir -p "$WORK/lower/etc" "$WORK/vol"
echo hello-from-erofs >"$WORK/lower/etc/hello"
mkfs.erofs -q -zlz4hc "$WORK/rootfs.erofs" "$WORK/lower" >/dev/null 2>&1 ||
  mkfs.erofs -zlz4hc "$WORK/rootfs.erofs" "$WORK/lower" >/dev/null
echo hello-from-host >"$WORK/vol/host.txt"

# ---- boot ---------------------------------------------------------------------------------
boot_once() {
  rm -f "$WORK/vol/guest.txt" "$WORK/agent.sock" "$WORK/scratch.ext4"
  truncate -s 64M "$WORK/scratch.ext4"
  mkfs.ext4 -q -F "$WORK/scratch.ext4"
  local cmd=(
    "$QEMU" -M microvm,rtc=on,acpi=off -accel "${ACCEL[0]}" "${ACCEL[@]:1}" -m 256 -smp 2
    -nodefaults -no-user-config -nographic -no-reboot -serial stdio
    -kernel "$KERNEL" -initrd "$WORK/initrd.cpio"
    -append "${MSB_SMOKE_CMDLINE:-console=ttyS0 quiet panic=-1 reboot=t}"
    -device virtio-rng-device
    -drive "id=rootfs,file=$WORK/rootfs.erofs,format=raw,if=none,readonly=on"
    -device virtio-blk-device,drive=rootfs,serial=msb-rootfs
    -drive "id=scratch,file=$WORK/scratch.ext4,format=raw,if=none"
    -device virtio-blk-device,drive=scratch,serial=msb-scratch
    -device virtio-serial-device
    -chardev "socket,id=agent,path=$WORK/agent.sock,server=on,wait=off"
    -device virtserialport,chardev=agent,name=msb.agent
    -netdev user,id=n0 -device virtio-net-device,netdev=n0
    -fsdev "local,id=v0,path=$WORK/vol,security_model=none"
    -device virtio-9p-device,fsdev=v0,mount_tag=vol0
    -device virtio-balloon-device,free-page-reporting=on
  )
  [[ $VERBOSE == 1 && $RUN == 1 ]] && say "qemu command: ${cmd[*]}"
  rm -f "$WORK/out"; mkfifo "$WORK/out"
  local t0=$EPOCHREALTIME
  timeout "$TIMEOUT" "${cmd[@]}" </dev/null >"$WORK/out" 2>&1 &
  QPID=$!
  local fd line first= done_line= rc
  exec {fd}<"$WORK/out"
  : >"$WORK/console.log"
  while IFS= read -r -u "$fd" line; do
    line=${line%$'\r'}
    printf '%s\n' "$line" >>"$WORK/console.log"
    [[ $VERBOSE == 1 ]] && printf '  | %s\n' "$line" >&2
    if [[ -z $first && $line == *"MSB-INIT start"* ]]; then first=$EPOCHREALTIME; fi
    [[ $line == "MSB-SMOKE done"* ]] && done_line=$line
  done
  exec {fd}<&-
  local t1=$EPOCHREALTIME
  rc=0; wait "$QPID" || rc=$?
  QPID=
  local ok=1
  if [[ -z $first ]]; then say "run $RUN: init never printed its first line"; ok=0; fi
  if [[ -z $done_line ]]; then say "run $RUN: checklist did not finish (qemu exit $rc)"; ok=0; fi
  if grep -q '^CHECK FAIL' "$WORK/console.log"; then ok=0; fi
  [[ $rc == 0 ]] || { say "run $RUN: qemu exited with $rc$([[ $rc == 124 ]] && echo ' (timeout)')"; ok=0; }
  if [[ $(cat "$WORK/vol/guest.txt" 2>/dev/null) != hello-from-guest ]]; then
    say "run $RUN: guest's write through 9p not visible on the host"; ok=0
  fi
  INIT_MS=$(awk -v a="$t0" -v b="${first:-$t1}" 'BEGIN{printf "%d", (b-a)*1000}')
  TOTAL_MS=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%d", (b-a)*1000}')
  if [[ $ok == 1 ]]; then
    say "run $RUN: PASS ($(grep -c '^CHECK ok' "$WORK/console.log") checks) — spawn→init first line ${INIT_MS} ms, spawn→exit ${TOTAL_MS} ms"
  else
    [[ $VERBOSE == 1 ]] || { say "run $RUN: guest console:"; sed 's/^/  | /' "$WORK/console.log" >&2; }
    grep '^CHECK FAIL' "$WORK/console.log" | sed 's/^/[smoke] /' >&2 || true
    return 1
  fi
}

say "kernel: $KERNEL"
times=()
for ((RUN = 1; RUN <= RUNS; RUN++)); do
  boot_once || die "smoke test failed on run $RUN"
  times+=("$INIT_MS")
done
median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2)}')
say "all $RUNS run(s) passed; spawn→init first line: ${times[*]} ms; median ${median} ms"
echo "PASS init_ms_median=$median runs=$RUNS"
