#!/usr/bin/env bash
# Runs the KVM e2e suite (vitest project `kvm`, e2e/kvm/) where /dev/kvm can run msb's guests:
# directly on a host whose KVM boots the guest kernel, otherwise inside the nested L1 VM of
# tools/kvm-runner (TCG emulating AMD SVM; one L1 boot).
#   e2e/kvm/run.sh [--mode auto|direct|l1] [--report FILE.json] [-- VITEST_ARGS...]
# --report: where vitest's JSON report goes (tools/test.sh counts it in its summary).
# Exit code: vitest's (125 when L1 could not run the suite at all).
set -uo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
mode=${MSB_KVM_MODE:-auto}
report=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --mode) mode=$2; shift 2 ;;
    --report) report=$2; shift 2 ;;
    --) shift; break ;;
    -h|--help) sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "e2e/kvm/run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

# Does this host's KVM run our guest kernel? Boot it with no root filesystem: under a working
# KVM it panics ("VFS: Unable to mount root fs") and QEMU exits (-no-reboot); nested or
# paravirtual KVM that cannot run it stops with "KVM internal error" or hangs.
kvm_runs_guests() {
  [[ -r /dev/kvm && -w /dev/kvm ]] || return 1
  local kernel
  kernel=$(bash tools/kernel/build.sh --print-path 2>/dev/null | tail -1)
  [[ -f $kernel ]] || return 1
  timeout 60 qemu-system-x86_64 -accel kvm -cpu host -M microvm,acpi=off -m 128 -nodefaults \
    -no-user-config -display none -no-reboot -serial stdio -kernel "$kernel" \
    -append "console=ttyS0 panic=-1 reboot=t" </dev/null 2>&1 | grep -q "Unable to mount root fs"
}

if [[ $mode == auto ]]; then
  if kvm_runs_guests; then mode=direct; else mode=l1; fi
  echo "kvm suite: running it ${mode/l1/in the nested L1 VM (tools/kvm-runner)}" >&2
fi

case $mode in
  direct)
    args=(run --project kvm --reporter=default)
    [[ -n $report ]] && args+=(--reporter=json "--outputFile.json=$report")
    MSB_KVM_SUITE=1 exec node node_modules/vitest/vitest.mjs "${args[@]}" "$@"
    ;;
  l1)
    out=$(mktemp -d "${TMPDIR:-/tmp}/msb-kvm-suite.XXXXXX")
    MSB_KVM_RUNNER_OUT=$out nice -n 5 bash tools/kvm-runner/run.sh -- \
      bash e2e/kvm/run.sh --mode direct --report "$out/kvm.json" -- "$@"
    rc=$?
    if [[ -n $report ]]; then
      # No report at all (L1 did not boot, the suite crashed): one failure for the summary.
      [[ -f $out/kvm.json ]] && cp "$out/kvm.json" "$report" ||
        echo '{"numPassedTests":0,"numFailedTests":1,"numPendingTests":0,"numTodoTests":0}' > "$report"
    fi
    rm -rf "$out"
    exit $rc
    ;;
  *) echo "e2e/kvm/run.sh: --mode must be auto, direct or l1" >&2; exit 2 ;;
esac
