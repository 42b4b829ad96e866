#!/usr/bin/env bash
# The whole test suite: type-check, lint, then every test file under test/ on the pinned Node.js.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
echo "test: node $(node --version), type-check and lint"
tsc -p .
biome check --log-level=error .
files=$(find test -name '*.test.ts' | sort)
exec node --disable-warning=ExperimentalWarning --test --test-concurrency=2 --test-reporter=spec $files "$@"
