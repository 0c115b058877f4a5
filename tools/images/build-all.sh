#!/usr/bin/env bash
# Builds msb's default images, microsandbox/python and microsandbox/node, into $MSB_HOME
# (default ~/.msb). Idempotent and cached: a build is keyed by its definition (+ files,
# builder version, host apt sources) under ${MSB_CACHE_DIR:-~/.cache/msb}/image-builds/, so
# a second run, or another MSB_HOME, only imports it (seconds). Never reads stdin.
# Progress on stderr; one line per image on stdout. Exit code non-zero when a build fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
for name in python node; do
  bash "$root/tools/images/build.sh" "$root/images/$name" "$@"
done
