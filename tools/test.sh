#!/usr/bin/env bash
# The one test command (README, CI): installs what is missing, runs every static check, then
# unit, integration and end-to-end tests (real registry, real QEMU VMs), and prints one
# closing line "tests: N passed, N failed, N skipped".
# Usage: tools/test.sh [unit|int|e2e|kvm ...]   (default: unit int e2e; kvm — the KVM suite in a
# nested VM, docs/kvm.md — only when named, until its failure under nested KVM is fixed)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export NX_DAEMON=false NX_NO_CLOUD=true
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }
die() { echo "test: $*" >&2; exit 1; }

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(unit int e2e)

say "setup"
bash tools/setup.sh || die "setup failed"

say "static checks"
bash tools/proto/check.sh || die "proto check failed"
npx nx show projects >/dev/null || die "nx cannot read the workspace"
npx tsc -p tsconfig.lint.json || die "type check failed"
npx eslint . --max-warnings 0 || die "lint failed"
npx prettier --check "**/*.{ts,json}" >/dev/null || die "formatting: run 'npx prettier --write \"**/*.{ts,json}\"'"

results="$root/.msb-test/results"
rm -rf "$results"
mkdir -p "$results"
failed=0
for suite in "${suites[@]}"; do
  [ "$suite" != kvm ] || continue
  say "tests: $suite"
  npx vitest run --project "$suite" --reporter=default --reporter=json \
    --outputFile.json="$results/$suite.json" --passWithNoTests || failed=1
done
if [[ " ${suites[*]} " == *" unit "* ]]; then
  say "tests: REPL drivers on the host"
  node --test --test-reporter=tap tools/agent/test-drivers.mjs > "$results/node-test.tap" 2>&1 || failed=1
  tail -12 "$results/node-test.tap"
fi
if [ -d libs/sdk-python ] && [[ " ${suites[*]} " == *" unit "* ]]; then
  say "tests: python sdk"
  (cd libs/sdk-python && python3 -m unittest discover -s tests -v 2>&1 | tee "$results/python.txt") || failed=1
fi
if [[ " ${suites[*]} " == *" kvm "* ]]; then
  # Sandboxes under KVM: on this host when its /dev/kvm runs our guests, else in a nested VM.
  say "tests: kvm (e2e/kvm/run.sh)"
  bash e2e/kvm/run.sh --report "$results/kvm.json" || failed=1
fi
node tools/test-summary.mjs "$results" || failed=1
exit $failed
