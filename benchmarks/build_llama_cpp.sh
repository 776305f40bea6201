#!/usr/bin/env bash
# Builds llama.cpp (the CPU peer of benchmark B5) from the copy vendored in llama-cpp-python's source package, a
# registry package, into benchmarks/.work/llama.cpp: `llama-bench` and `llama-quantize`, plus the converter
# `convert_hf_to_gguf.py` and its `gguf-py`. About 10 minutes on 2 cores. B5 is skipped (and says so) until this ran.
#   benchmarks/build_llama_cpp.sh [llama-cpp-python version]
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="${1:-0.3.36}"
WORK=benchmarks/.work/llama.cpp
PY="${PYTHON:-.venv/bin/python}"
mkdir -p "$WORK/download"
if [ ! -d "$WORK/src" ]; then
  "$PY" -m pip download --quiet --no-deps --no-binary :all: --dest "$WORK/download" "llama-cpp-python==$VERSION"
  tar -xzf "$WORK/download/llama_cpp_python-$VERSION.tar.gz" -C "$WORK/download"
  mv "$WORK/download/llama_cpp_python-$VERSION/vendor/llama.cpp" "$WORK/src"
  rm -rf "$WORK/download"
fi
# native CPU flags (what a CPU user building llama.cpp gets); no curl, no server UI
cmake -S "$WORK/src" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF > "$WORK/cmake.log"
cmake --build "$WORK/build" --config Release -j "$(nproc)" --target llama-bench llama-quantize > "$WORK/build.log"
ls "$WORK/build/bin/llama-bench" "$WORK/build/bin/llama-quantize"
echo "llama.cpp $VERSION built in $WORK (llama-cpp-python $VERSION's vendored copy)"
