#!/usr/bin/env bash
# The long variants of the robustness tests (`npm run soak`); not part of `npm test`.
#   - fuzz of /api/v1/rpc and /mcp and the agent-protocol decoder with MSB_FUZZ_CASES cases
#     (default 50 000; a fresh seed each run, printed: replay with MSB_FUZZ_SEED=<seed>);
#   - e2e/src/reliability/ (load, capacity, secrets, --dev loopback) and e2e/src/faults/
#     (kill -9, limits, power cut) with MSB_SOAK=1: more requests, more rounds, longer loops.
# Usage: tools/soak.sh [int|e2e ...]   (default: both)   Prints one closing line per part.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export NX_DAEMON=false NX_NO_CLOUD=true
export MSB_SOAK=1
export MSB_FUZZ_CASES="${MSB_FUZZ_CASES:-50000}"
say() { printf '\n\033[1m== %s\033[0m\n' "$*" >&2; }

parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(int e2e)
failed=0
for part in "${parts[@]}"; do
  case "$part" in
    int)
      say "soak: fuzz ($MSB_FUZZ_CASES cases per test)"
      npx vitest run --project int \
        apps/control-plane/src/http/rpc/rpc-fuzz.int.test.ts \
        apps/control-plane/src/mcp/mcp-fuzz.int.test.ts || failed=1
      npx vitest run --project unit libs/agent-protocol/src/hostile-guest.test.ts || failed=1
      ;;
    e2e)
      say "soak: reliability and faults (MSB_SOAK=1, real VMs)"
      npm run build >/dev/null || { echo "soak: build failed" >&2; exit 1; }
      dirs=(e2e/src/reliability/)
      [ -d e2e/src/faults ] && dirs+=(e2e/src/faults/)
      npx vitest run --project e2e "${dirs[@]}" || failed=1
      ;;
    *)
      echo "soak: unknown part '$part' (use int or e2e)" >&2
      exit 2
      ;;
  esac
done
if [ "$failed" = 0 ]; then echo "soak: passed"; else echo "soak: FAILED"; fi
exit "$failed"
