#!/usr/bin/env bash
# Builds llama.cpp's own binaries (llama-bench, llama-completion, llama-speculative-simple, llama-server) from the
# llama.cpp tree inside the llama-cpp-python sdist, outside the repository, for the anchors of the benchmarks.
#   bash bench/build_llamacpp.sh [--avx2-only] [OUT_DIR]
#       (default OUT_DIR ~/.cache/adadecode/llamacpp-bin, or llamacpp-bin-avx2 with --avx2-only; prints OUT_DIR/bin)
#   --avx2-only: no AVX-512 (GGML_NATIVE off, AVX2 + FMA + F16C on), the code an AVX2-only CPU (Zen 3, most laptops)
#   runs: the anchor for our kernels forced to AVX2 (ADADECODE_QMATMUL=avx2 ADADECODE_ATTENTION=avx2) on this CPU.
# Tuned to this CPU (GGML_NATIVE) but with AMX off. On a CPU with AMX the native build compiles ggml's AMX kernels
# whatever GGML_AMX_* say, and on the Intel Xeon VM here (Emerald Rapids, 2026-12-06) they died with SIGILL at the
# first product (tilezero, in ggml_backend_amx_mul_mat); there the build names this CPU's instruction sets itself.
# Takes ~15-20 minutes on 2 cores; a finished build is reused.
set -euo pipefail
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.35}
cpu_flags=(-DGGML_NATIVE=ON)
if grep -qw amx_tile /proc/cpuinfo 2>/dev/null; then
    has() { grep -m1 '^flags' /proc/cpuinfo | grep -qw "$1" && echo ON || echo OFF; }
    cpu_flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
        "-DGGML_AVX512=$(has avx512f)" "-DGGML_AVX512_VBMI=$(has avx512vbmi)" "-DGGML_AVX512_VNNI=$(has avx512_vnni)"
        "-DGGML_AVX512_BF16=$(has avx512_bf16)" "-DGGML_AVX_VNNI=$(has avx_vnni)")
fi
suffix=
if [ "${1:-}" = --avx2-only ]; then
    cpu_flags=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
        -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AVX_VNNI=OFF)
    suffix=-avx2
    shift
fi
OUT=${1:-${ADADECODE_CACHE:-$HOME/.cache/adadecode}/llamacpp-bin$suffix}
SRC="$OUT/src"
TOOLS=(llama-bench llama-completion llama-speculative-simple llama-server)
mkdir -p "$OUT"
if [ ! -d "$SRC/llama_cpp_python-$VERSION" ]; then
    mkdir -p "$SRC"
    python3 -m pip download -q --no-deps --no-binary llama-cpp-python --no-build-isolation \
        "llama-cpp-python==$VERSION" -d "$SRC" 2>&1 | { grep -v "is ignored" || true; }
    tar -xzf "$SRC/llama_cpp_python-$VERSION.tar.gz" -C "$SRC"
fi
TREE="$SRC/llama_cpp_python-$VERSION/vendor/llama.cpp"
cmake -S "$TREE" -B "$OUT/build" -DCMAKE_BUILD_TYPE=Release "${cpu_flags[@]}" -DGGML_AMX_TILE=OFF \
    -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DBUILD_SHARED_LIBS=OFF \
    -DLLAMA_BUILD_TESTS=OFF >"$OUT/cmake.log"
cmake --build "$OUT/build" --parallel "${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" --target "${TOOLS[@]}" >"$OUT/build.log"
mkdir -p "$OUT/bin"
for tool in "${TOOLS[@]}"; do cp "$OUT/build/bin/$tool" "$OUT/bin/"; done
echo "$OUT/bin"
