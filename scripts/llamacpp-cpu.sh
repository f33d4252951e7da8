#!/usr/bin/env bash
# Build llama.cpp's llama-bench (or $LLAMA_TARGET, e.g. llama-server; CPU, -march=native) from the source vendored
# in the llama-cpp-python source package, for side-by-side benchmarks.
# Prints the path of the built tool. Cached under ~/.cache/ferrum/llamacpp.
set -euo pipefail
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
dir="${FERRUM_CACHE:-$HOME/.cache/ferrum}/llamacpp-$VERSION"
target=${LLAMA_TARGET:-llama-bench}
bin="$dir/llama.cpp/build/bin/$target"
if [ -x "$bin" ]; then echo "$bin"; exit 0; fi
mkdir -p "$dir"
python3 -m pip install -q cmake ninja scikit-build-core >&2
python3 -m pip download -q --no-deps --no-binary :all: --no-build-isolation -d "$dir/src" "llama-cpp-python==$VERSION" >&2
tar xzf "$dir"/src/llama_cpp_python-*.tar.gz -C "$dir/src"
if [ ! -d "$dir/llama.cpp" ]; then
  mv "$dir"/src/llama_cpp_python-*/vendor/llama.cpp "$dir/llama.cpp"
fi
cd "$dir/llama.cpp"
cmake -B build -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DCMAKE_BUILD_TYPE=Release \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF >&2
cmake --build build --target "$target" -j"$(nproc)" >&2
echo "$bin"
