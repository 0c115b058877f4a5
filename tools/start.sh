#!/usr/bin/env bash
# `npm start`: installs and builds what is missing (tools/setup.sh), then runs the msb server in
# the foreground in dev mode (no authentication, loopback only) on http://127.0.0.1:5555.
# Extra arguments go to `msb server start`, e.g. `npm start -- --port 8080`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
bash tools/setup.sh
exec node apps/msb/dist/main.js server start --dev "$@"
