#!/usr/bin/env bash
# Packs what bench/gpu_scale/run_gpu.sh needs from the llama-cpp-python sdist into one file that fits the 64 MiB a
# device call carries: the llama.cpp tree (ggml, libllama, common, tools, vendor and gguf-py) without its models,
# docs, web UI, tests and examples (the sdist's tarball is 75 MB, its tree 211 MB; this is about 10 MB).
#   bash bench/gpu_scale/pack_sources.sh [SDIST_DIR] [OUT_FILE]
#   SDIST_DIR: the unpacked llama_cpp_python-0.3.35 (default /work/lcp/llama_cpp_python-0.3.35)
#   OUT_FILE:  default .gpu_carry/llama.cpp-src.tar.gz (ignored by git; name .gpu_carry in the call's carry)
set -euo pipefail
SDIST=${1:-/work/lcp/llama_cpp_python-0.3.35}
OUT_FILE=${2:-.gpu_carry/llama.cpp-src.tar.gz}
TREE="$SDIST/vendor/llama.cpp"
[ -f "$TREE/CMakeLists.txt" ] || { echo "pack_sources: no llama.cpp tree at $TREE" >&2; exit 2; }
mkdir -p "$(dirname "$OUT_FILE")"
tar -czf "$OUT_FILE.tmp" -C "$(dirname "$TREE")" \
    --exclude='llama.cpp/models' --exclude='llama.cpp/docs' --exclude='llama.cpp/media' \
    --exclude='llama.cpp/tests' --exclude='llama.cpp/examples' --exclude='llama.cpp/benches' \
    --exclude='llama.cpp/pocs' --exclude='llama.cpp/tools/ui' --exclude='llama.cpp/tools/server/public*' \
    --exclude='llama.cpp/tools/server/webui' --exclude='*.gguf' --exclude='.git' llama.cpp
mv "$OUT_FILE.tmp" "$OUT_FILE"
size=$(stat -c %s "$OUT_FILE")
echo "$OUT_FILE: $((size / 1048576)) MiB"
if [ "$size" -gt $((48 * 1048576)) ]; then
    echo "pack_sources: $OUT_FILE is over 48 MiB; a device call carries 64 MiB in all" >&2
    exit 1
fi
