#!/usr/bin/env bash
# The whole test suite: type-check, lint, then every test file under test/ on the pinned Node.js.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
echo "test: node $(node --version), type-check and lint"
tsc -p .
biome check --log-level=error .
run() { node --disable-warning=ExperimentalWarning --test --test-reporter=spec "$@"; }
# The VM tests run after the others, alone: emulated guests on a busy host are unreliable (test/helpers/vm.ts).
status=0
run --test-concurrency=2 $(find test -name '*.test.ts' -not -path 'test/vm/*' | sort) "$@" || status=$?
run --test-concurrency=1 $(find test/vm -name '*.test.ts' | sort) "$@" || status=$?
exit $status
