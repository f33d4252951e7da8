#!/usr/bin/env bash
# Side-by-side CPU benchmark on the default model: llama.cpp's llama-bench and
# `ferrum bench`, pp512 and tg128, same threads, same file, one run.
# Usage: scripts/bench-cpu.sh [THREADS]   (LLAMA_BENCH=path skips the llama.cpp build)
set -euo pipefail
cd "$(dirname "$0")/.."
threads=${1:-$(nproc)}
model=$(scripts/fetch-default-model.sh)
llama_bench=${LLAMA_BENCH:-$(scripts/llamacpp-cpu.sh)}
cargo build --release -q -p ferrum-cli
echo "## llama.cpp (llama-bench, $threads threads)"
"$llama_bench" -m "$model" -p 512 -n 128 -t "$threads" -r 3
echo
echo "## Ferrum (ferrum bench, one worker per core)"
target/release/ferrum bench -m "$model" -p 512 -n 128 -r 3
