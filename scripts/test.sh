#!/usr/bin/env bash
# The whole test suite. Fetches the default model (cached under
# ~/.cache/ferrum/models) for the tests that run it, then runs every test of
# the workspace. Usage: scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${FERRUM_SKIP_MODEL_TESTS:-0}" != 1 ]; then
  FERRUM_DEFAULT_MODEL=$(scripts/fetch-default-model.sh)
  export FERRUM_DEFAULT_MODEL
fi
cargo test --workspace --no-fail-fast 2>&1
