#!/bin/bash
# Runs as PID 1 in L1 (exec'd by the image's /sbin/msb-l1-init): makes L1 look like a KVM host
# (kvm-amd loaded, /dev/kvm 0660 root:kvm, loopback up), mounts the shares at their host paths
# under throw-away overlays, runs /mnt/run/cmd.sh, writes its exit code to $MSB_L1_OUT/.rc and
# powers off. Whatever happens, L1 powers off: the host waits for QEMU to exit.
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
eval "$(grep '^export MSB_L1_' /mnt/run/cmd.sh)"
stty -F /dev/ttyS0 -onlcr 2>/dev/null
exec </dev/null >/dev/ttyS0 2>&1
say() { echo "[l1] $*"; }
off() { sync; echo o > /proc/sysrq-trigger; sleep 5; }

mkdir -p /dev/pts /dev/shm /run /tmp
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=755 tmpfs /run
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
ip link set lo up
# No network in L1: no name server either, so a lookup fails at once instead of timing out.
: > /etc/resolv.conf
rm -rf /etc/apt/sources.list /etc/apt/sources.list.d
cp -a /mnt/run/apt/. /etc/apt/
hostname msb-l1
ulimit -n 65536

# kvm-amd needs irqbypass, kvm and ccp, which modprobe loads in that order.
if ! modprobe kvm_amd nested=1 npt=1; then say "kvm_amd did not load"; fi
if [ -c /dev/kvm ]; then
  chown root:kvm /dev/kvm && chmod 0660 /dev/kvm
else
  say "no /dev/kvm: the CPU model has no SVM"
fi
modprobe -q overlay
modprobe -q tun 2>/dev/null

# Shares: read-only 9p lower layers, writable overlays on L1's own disk (gone after the run).
share() { # tag path rw
  local lower=/mnt/ro/$1 state=/var/lib/msb-l1/$1
  # The image's init mounted the checkout already (a 9p tag can be mounted only once).
  [ "$1" = repo ] && lower=/mnt/repo
  mkdir -p "$lower" "$state/up" "$state/work" "$2"
  mountpoint -q "$lower" || mount -t 9p -o "trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose" "$1" "$lower" ||
    { say "cannot mount share $1"; return 1; }
  mount -t overlay overlay -o "lowerdir=$lower,upperdir=$state/up,workdir=$state/work" "$2" ||
    { say "cannot overlay share $1 at $2"; return 1; }
}
mkdir -p "$MSB_L1_REPO"
ok=1
share repo "$MSB_L1_REPO" || ok=0
share cache "$MSB_L1_CACHE" || ok=0
share home "$MSB_L1_HOME" || ok=0
mkdir -p "$MSB_L1_OUT"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 out "$MSB_L1_OUT" || ok=0
if [ $ok = 0 ]; then say "setup failed"; off; fi

# Nested KVM exits are emulated by TCG: an L2 boot takes 15-30 s where a real KVM host takes
# well under one. The product's deadlines are sized for real hosts (and for TCG on the host);
# here they get the room nesting needs, unless the caller set them.
export MSB_ACCEL_PROBE_TIMEOUT_MS=${MSB_ACCEL_PROBE_TIMEOUT_MS:-120000}
export MSB_BOOT_TIMEOUT_MS=${MSB_BOOT_TIMEOUT_MS:-300000}
export MSB_SERVICE_READY_TIMEOUT_MS=${MSB_SERVICE_READY_TIMEOUT_MS:-600000}
say "kernel $(uname -r), $(nproc) vCPUs, $(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) MiB, /dev/kvm $(stat -c '%A %U:%G' /dev/kvm 2>/dev/null || echo missing)"
# Through a pipe: the console is a terminal, and tools that see one redraw progress lines.
bash /mnt/run/cmd.sh 2>&1 | cat
rc=${PIPESTATUS[0]}
echo "$rc" > "$MSB_L1_OUT/.rc"
off
