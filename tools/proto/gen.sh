#!/usr/bin/env bash
# Regenerates libs/proto/src/gen from proto/ with buf + ts-proto. Generated code is committed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root/proto"
rm -rf "$root/libs/proto/src/gen"
"$root/node_modules/.bin/buf" generate
