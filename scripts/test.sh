#!/usr/bin/env bash
# The whole test suite. Fetches the default model (cached under
# ~/.cache/ferrum/models) for the tests that run it, then runs every test of
# the workspace and closes with one summary line.
# Usage: scripts/test.sh   (FERRUM_SKIP_MODEL_TESTS=1 skips the real-model tests)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${FERRUM_SKIP_MODEL_TESTS:-0}" != 1 ]; then
  FERRUM_DEFAULT_MODEL=$(scripts/fetch-default-model.sh)
  export FERRUM_DEFAULT_MODEL
fi
# NVRTC (no GPU needed) so that a test compiles every CUDA kernel for sm_80 and sm_90a.
nvrtc_dir="${FERRUM_CACHE:-$HOME/.cache/ferrum}/nvrtc"
if [ ! -d "$nvrtc_dir/nvidia/cuda_nvrtc/lib" ]; then
  python3 -m pip install -q --target "$nvrtc_dir" "nvidia-cuda-nvrtc-cu12==12.9.86"
fi
export LD_LIBRARY_PATH="$nvrtc_dir/nvidia/cuda_nvrtc/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export FERRUM_REQUIRE_NVRTC=1
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
summary=$(awk '/^test result:/ { for (i = 1; i < NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
  END { printf "%d passed, %d failed", p, f }' "$log")
echo
echo "workspace: $summary"
exit "$status"
