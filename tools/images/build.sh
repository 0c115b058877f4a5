#!/usr/bin/env bash
# Builds one image definition into $MSB_HOME's store (cached in $MSB_CACHE_DIR/image-builds).
# Usage: tools/images/build.sh images/python [--tag NAME:TAG] [--no-cache] [--json]
# Progress goes to stderr; the result (reference, digest, sizes) to stdout. No stdin.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
[ $# -ge 1 ] || { echo "usage: $0 images/<name> [--tag NAME:TAG] [--no-cache] [--json]" >&2; exit 2; }
# The CLI runs from dist/; build it when it is missing or older than its sources.
if [ ! -f "$root/apps/image-service/dist/cli.js" ] ||
  [ -n "$(find "$root/apps/image-service/src" "$root/libs/errors/src" "$root/libs/proto/src" \
    "$root/libs/runtime/src" -name '*.ts' -newer "$root/apps/image-service/dist/cli.js" -print -quit 2>/dev/null)" ]; then
  (cd "$root" && npx tsc -b apps/image-service >&2)
fi
exec node "$root/apps/image-service/dist/cli.js" build "$@" </dev/null
