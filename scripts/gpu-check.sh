#!/usr/bin/env bash
# Ferrum on an NVIDIA GPU: every CUDA parity test, then the benchmarks side by
# side with llama.cpp's CUDA build (same machine, same files), and a table of
# the results last. Runs from the repository root on a machine with the CUDA
# toolkit; needs no Rust and no network (scripts/gpu-bundle.sh prepares BIN).
#
# Usage: scripts/gpu-check.sh BIN [STAGE...]
#   BIN      folder from scripts/gpu-bundle.sh (ferrum, cuda_ops, cuda_models, llamacpp-src.tgz)
#   STAGE    tests | llamacpp | bench | serve | profile   (default: all, in that order)
# Environment: MODEL (the default model GGUF; real-model checks are skipped
# without it), WORK (scratch folder, default /tmp/ferrum-gpu: llama.cpp build,
# the synthetic 30B MoE GGUF, logs, summary.md).
set -uo pipefail
bin=$(cd "${1:?usage: scripts/gpu-check.sh BIN [STAGE...]}" && pwd)
shift
stages=${*:-tests llamacpp bench serve profile}
repo=$(pwd)
work=${WORK:-/tmp/ferrum-gpu}
mkdir -p "$work"
summary=$(mktemp -p "$work" summary.XXXX.md)
export LD_LIBRARY_PATH=/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
ferrum="$bin/ferrum"
model=${MODEL:-}
synth="$work/qwen3moe-30b-a3b-q4_k_m.gguf"
lbench="$work/llama.cpp/build/bin/llama-bench"
lserver="$work/llama.cpp/build/bin/llama-server"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)

note() { echo "$*" | tee -a "$summary"; }

models() {
  [ -n "$model" ] && [ -f "$model" ] && echo "$model"
  if [ ! -f "$synth" ]; then
    "$ferrum" synth qwen3moe-30b-a3b -o "$synth" >&2 || return 1
  fi
  echo "$synth"
}

# Bytes of weights one decoded token reads: every tensor but the token
# embedding, with expert tensors counted for the routed top-k only.
bytes_per_token() {
  "$ferrum" inspect --json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
md = {e["key"]: e["value"] for e in d["metadata"]}
arch = md.get("general.architecture", "")
n_exp = md.get(arch + ".expert_count") or 0
top_k = md.get(arch + ".expert_used_count") or 0
total = 0
for t in d["tensors"]:
    if t["name"].startswith("token_embd"):
        continue
    total += t["bytes"] * (top_k / n_exp if "_exps" in t["name"] and n_exp else 1)
print(int(total))'
}

stage_tests() {
  local env=(FERRUM_REQUIRE_GPU=1 FERRUM_REPO_ROOT="$repo")
  if [ -n "$model" ] && [ -f "$model" ]; then env+=(FERRUM_DEFAULT_MODEL="$model"); else env+=(FERRUM_SKIP_MODEL_TESTS=1); fi
  env "${env[@]}" "$bin/cuda_ops" --test-threads 1 2>&1 | tail -12
  local ops=${PIPESTATUS[0]}
  env "${env[@]}" "$bin/cuda_models" --test-threads 1 --nocapture 2>&1 | grep -v "^$" | tail -30
  local mods=${PIPESTATUS[0]}
  note "| CUDA op parity tests | $([ "$ops" = 0 ] && echo pass || echo FAIL) |"
  note "| CUDA model parity tests (fixtures$( [ -n "$model" ] && echo ', real model greedy vs llama.cpp')) | $([ "$mods" = 0 ] && echo pass || echo FAIL) |"
  if [ -n "$model" ] && [ -f "$model" ]; then
    local ppl
    ppl=$("$ferrum" perplexity --backend cuda -m "$model" "$repo/tests/fixtures/text/GPL-3" --ctx 512 2>"$work/ppl.log" | sed -n 's/^PPL = //p')
    note "| perplexity, GPL-3 text, ctx 512 (llama.cpp 5.3158) | $ppl |"
  fi
}

stage_llamacpp() {
  [ -x "$lserver" ] && [ -x "$lbench" ] && return 0
  tar xzf "$bin/llamacpp-src.tgz" -C "$work"
  mkdir -p "$work/llama.cpp/app" && touch "$work/llama.cpp/app/CMakeLists.txt"
  (cd "$work/llama.cpp" &&
    cmake -B build -G Ninja -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90a -DLLAMA_CURL=OFF \
      -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF >"$work/llamacpp-cmake.log" 2>&1 &&
    cmake --build build -j"$(nproc)" --target llama-bench llama-server >"$work/llamacpp-build.log" 2>&1) ||
    { tail -20 "$work/llamacpp-build.log"; return 1; }
}

stage_bench() {
  local m
  for m in $(models); do
    local name bpt f l
    name=$(basename "$m" .gguf)
    bpt=$(bytes_per_token "$m")
    f=$("$ferrum" bench --backend cuda -m "$m" -p 512 -n 128 -r 3 --json 2>"$work/bench-$name.log")
    l="[]"
    [ -x "$lbench" ] && l=$("$lbench" -m "$m" -p 512 -n 128 -r 3 -ngl 99 -fa 1 -o json 2>"$work/llama-bench-$name.log")
    python3 - "$name" "$bpt" "$gpu" "$f" "$l" <<'PY' | tee -a "$summary"
import json, sys
name, bpt, gpu, f, l = sys.argv[1], int(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4]), json.loads(sys.argv[5])
bw = 4.8e12 if "H200" in gpu else 3.35e12
ours = {r["test"]: r["tokens_per_s_mean"] for r in f}
theirs = {}
for r in l:
    test = f"pp{r['n_prompt']}" if r["n_prompt"] else f"tg{r['n_gen']}"
    theirs[test] = r["avg_ts"]
for t in ("pp512", "tg128"):
    o, p = ours.get(t, 0), theirs.get(t, 0)
    roof = f"; decode roofline {o * bpt / bw:.0%} (Ferrum), {p * bpt / bw:.0%} (llama.cpp)" if t.startswith("tg") else ""
    print(f"| {name} {t} | Ferrum {o:.1f} tok/s | llama.cpp {p:.1f} tok/s | {o / p if p else 0:.2f}x{roof} |")
PY
  done
}

wait_ready() {
  for _ in $(seq 1 1200); do
    curl -sf "http://127.0.0.1:$1/health" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  return 1
}

serve_load() { # NAME PORT: closed loop at concurrency 1, 16 and 64, random 256 in / 128 out
  # (a seed per level: no prompt repeats an earlier level's, so no prefix-cache hits)
  local c
  for c in 1 16 64; do
    "$ferrum" bench serve --base-url "http://127.0.0.1:$2" --concurrency "$c" --num-prompts $((c < 8 ? 8 : 2 * c)) \
      --warmup 1 --input-len 256 --output-len 128 --seed "$c" --result-json "$work/serve-$1-c$c.json" >/dev/null 2>&1
  done
}

stage_serve() {
  local m
  for m in $(models); do
    local name
    name=$(basename "$m" .gguf)
    [ -x "$lserver" ] || return 1
    "$lserver" -m "$m" --port 8390 -np 64 -c $((64 * 400)) -ngl 99 -fa on >"$work/llama-server-$name.log" 2>&1 &
    local pid=$!
    wait_ready 8390 && serve_load "llama-$name" 8390
    kill $pid; wait $pid 2>/dev/null
    "$ferrum" serve --backend cuda -m "$m" --port 8391 --max-num-seqs 64 --max-num-batched-tokens 8192 >"$work/ferrum-serve-$name.log" 2>&1 &
    pid=$!
    wait_ready 8391 && serve_load "ferrum-$name" 8391
    kill $pid; wait $pid 2>/dev/null
    python3 - "$work" "$name" <<'PY' | tee -a "$summary"
import json, os, sys
work, name = sys.argv[1], sys.argv[2]
def tps(who, c):
    p = os.path.join(work, f"serve-{who}-{name}-c{c}.json")
    try:
        return json.load(open(p))["output_throughput"]
    except Exception:
        return 0.0
for c in (1, 16, 64):
    o, l = tps("ferrum", c), tps("llama", c)
    print(f"| {name} serve c={c} (256 in / 128 out) | Ferrum {o:.1f} tok/s | llama-server {l:.1f} tok/s | {o / l if l else 0:.2f}x |")
PY
  done
}

stage_profile() { # per-kernel time of decode steps (batch 1) and of a 512-token prefill, each model
  local m ncu
  ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
  [ -n "$ncu" ] || { echo "ncu not found"; return 1; }
  for m in $(models); do
    local name
    name=$(basename "$m" .gguf)
    # Caches are not flushed between kernels (as in a graph replay); the
    # profiler serializes the kernels, so launch overlap is not seen.
    "$ncu" --csv --clock-control none --cache-control none --metrics gpu__time_duration.sum --launch-skip 2000 \
      --launch-count 500 "$ferrum" bench --backend cuda -m "$m" -p 0 -n 64 -r 1 >"$work/ncu-tg-$name.csv" 2>/dev/null
    "$ncu" --csv --clock-control none --cache-control none --metrics gpu__time_duration.sum --launch-count 1000 \
      "$ferrum" bench --backend cuda -m "$m" -p 512 -n 0 -r 1 >"$work/ncu-pp-$name.csv" 2>/dev/null
    local what
    for what in tg pp; do
      python3 - "$work/ncu-$what-$name.csv" "$name ($([ $what = tg ] && echo 'decode steps' || echo '512-token prefill'))" <<'PY' | tee -a "$summary"
import csv, collections, sys
rows = [r for r in csv.DictReader(l for l in open(sys.argv[1]) if l.startswith('"'))]
t = collections.defaultdict(float); n = collections.Counter()
for r in rows:
    if r.get("Metric Name") == "gpu__time_duration.sum":
        k = r["Kernel Name"].split("(")[0][:48]
        t[k] += float(r["Metric Value"].replace(",", "")) / 1e3
        n[k] += 1
tot = sum(t.values())
print(f"\nper-kernel GPU time over {len(rows)} launches, {sys.argv[2]} (µs, share):")
for k, v in sorted(t.items(), key=lambda kv: -kv[1])[:16]:
    print(f"  {k:48s} {v:10.1f}  {v / tot:5.1%}  ({n[k]} launches, {v / n[k]:.1f} each)")
PY
    done
  done
}

for s in $stages; do
  echo "== $s"
  "stage_$s" || note "| stage $s | FAILED |"
done
echo
echo "## Summary ($gpu)"
cat "$summary"
