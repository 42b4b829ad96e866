#!/usr/bin/env bash
# Runs every benchmark in bench/ (or those named) on the pinned Node.js; each compares Seal with
# the reference tool on the same input in the same run and prints ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
benches=("$@")
[ ${#benches[@]} -gt 0 ] || mapfile -t benches < <(find bench -maxdepth 1 -name '*.ts' | sort)
for b in "${benches[@]}"; do
  [ -f "$b" ] || b="bench/$b.ts"
  echo "== $b"
  node --disable-warning=ExperimentalWarning "$b"
done
