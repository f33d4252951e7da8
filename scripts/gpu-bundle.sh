#!/usr/bin/env bash
# Build everything scripts/gpu-check.sh needs on a GPU machine that has the
# CUDA toolkit but no Rust toolchain and no network, into one folder:
#   ferrum          the release binary (CUDA support is loaded at run time)
#   cuda_ops        CUDA op parity tests (test binary)
#   cuda_models     CUDA model parity tests (test binary)
#   llamacpp-src.tgz  llama.cpp's source, trimmed, for the side-by-side build
# Usage: scripts/gpu-bundle.sh OUT_DIR
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/gpu-bundle.sh OUT_DIR}
mkdir -p "$out"
cargo build --release -q -p ferrum-cli
cp target/release/ferrum "$out/ferrum"
for t in "ferrum-kernels cuda_ops" "ferrum-model cuda_models"; do
  set -- $t
  exe=$(cargo test -p "$1" --test "$2" --no-run --message-format=json 2>/dev/null | python3 -c '
import json, sys
print([j["executable"] for j in map(json.loads, sys.stdin) if j.get("executable")][-1])')
  cp "$exe" "$out/$2"
done
strip "$out/ferrum" "$out/cuda_ops" "$out/cuda_models"

# llama.cpp, vendored in the llama-cpp-python source package, without the
# parts a CUDA build of llama-bench and llama-server does not compile.
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
cache="${FERRUM_CACHE:-$HOME/.cache/ferrum}/llamacpp-$VERSION"
if [ ! -d "$cache/llama.cpp" ]; then
  mkdir -p "$cache/src"
  python3 -m pip install -q scikit-build-core >&2
  python3 -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$cache/src" "llama-cpp-python==$VERSION" >&2
  tar xzf "$cache"/src/llama_cpp_python-*.tar.gz -C "$cache/src"
  mv "$cache"/src/llama_cpp_python-*/vendor/llama.cpp "$cache/llama.cpp"
fi
excl=()
for d in build models docs media examples app pocs; do excl+=(--exclude="llama.cpp/$d"); done
for b in vulkan opencl sycl hexagon metal et webgpu openvino cann; do excl+=(--exclude="llama.cpp/ggml/src/ggml-$b"); done
tar czf "$out/llamacpp-src.tgz" -C "$cache" "${excl[@]}" llama.cpp
ls -la "$out"
