#!/usr/bin/env bash
# buf lint, buf breaking (against the previous commit on main, or the merge base with main),
# and a check that the committed generated code matches what regeneration produces.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
buf="$root/node_modules/.bin/buf"
cd "$root/proto"
echo "proto: buf lint"
"$buf" lint

cd "$root"
if git rev-parse --verify -q main >/dev/null; then
  base=$(git merge-base HEAD main)
  [ "$base" = "$(git rev-parse HEAD)" ] && base=$(git rev-parse -q --verify HEAD~1 || true)
else
  base=$(git rev-parse -q --verify HEAD~1 || true)
fi
if [ -n "$base" ] && git cat-file -e "$base:proto/buf.yaml" 2>/dev/null; then
  echo "proto: buf breaking against $base"
  (cd proto && "$buf" breaking --against "$root/.git#ref=$base,subdir=proto")
else
  echo "proto: buf breaking skipped (no earlier proto/ to compare with)"
fi

echo "proto: generated code is up to date"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r libs/proto/src/gen "$tmp/committed"
bash tools/proto/gen.sh
if ! diff -r "$tmp/committed" libs/proto/src/gen >/dev/null; then
  diff -r "$tmp/committed" libs/proto/src/gen | head -40
  echo "proto: libs/proto/src/gen is stale; run 'npm run proto:gen' and commit the result" >&2
  exit 1
fi
