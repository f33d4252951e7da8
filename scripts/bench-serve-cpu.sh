#!/usr/bin/env bash
# Side-by-side serving benchmark on the default model, CPU: `ferrum serve`
# and llama.cpp's llama-server (8 slots), each loaded by `ferrum bench serve`
# with random 128-token prompts and 64 output tokens (ignore_eos), closed
# loop at concurrency 1, 4 and 8.
# Usage: scripts/bench-serve-cpu.sh   (LLAMA_SERVER=path skips the llama.cpp build)
set -euo pipefail
cd "$(dirname "$0")/.."
model=$(scripts/fetch-default-model.sh)
llama_server=${LLAMA_SERVER:-$(LLAMA_TARGET=llama-server scripts/llamacpp-cpu.sh)}
cargo build --release -q -p ferrum-cli
ferrum=target/release/ferrum
port=8321

wait_ready() {
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$port/health" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  echo "server on port $port did not become ready" >&2
  return 1
}

load() {
  for c in 1 4 8; do
    "$ferrum" bench serve --base-url "http://127.0.0.1:$port" --concurrency "$c" \
      --num-prompts $((c * 3)) --warmup 1 --input-len 128 --output-len 64 --seed 1 \
      --result-json "$1-c$c.json" | sed -n '/|/p'
  done
}

out=${BENCH_OUT:-target/bench-serve}
mkdir -p "$out"
echo "## llama-server (8 slots, 2 threads)"
"$llama_server" -m "$model" --port "$port" -np 8 -c 8192 -t 2 >"$out/llama-server.log" 2>&1 &
pid=$!
wait_ready && load "$out/llama-server"
kill "$pid"; wait "$pid" 2>/dev/null || true
echo
echo "## ferrum serve"
"$ferrum" serve -m "$model" --port "$port" >"$out/ferrum.log" 2>&1 &
pid=$!
wait_ready && load "$out/ferrum"
kill "$pid"; wait "$pid" 2>/dev/null || true
