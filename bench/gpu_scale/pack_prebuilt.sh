#!/usr/bin/env bash
# Packs a CUDA build of adadecode made here for bench/gpu_scale/run_profile.sh, so a short lease spends no minutes
# building: the extension and ggml's shared libraries into .gpu_carry/prebuilt.tar.xz, the tree's gguf-py into
# .gpu_carry/gguf-py.tar.gz. The build (Python 3.12 like the GPU image, nvcc 13.0 with cuBLAS's headers and
# libraries from the nvidia-cublas wheel, and a link-time stub of libcuda.so where the driver is absent):
#   cmake -S . -B BUILD -G Ninja -DCMAKE_BUILD_TYPE=Release -DADADECODE_GGML_SOURCE_DIR=TREE/ggml -DGGML_CUDA=ON \
#     -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF -DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON \
#     -DADADECODE_BUILD_PYTHON=ON -DADADECODE_BUILD_TESTS=OFF -DPython_EXECUTABLE=python3.12 -Dpybind11_DIR=...
#   cmake --build BUILD --target _core adadecode-microbench
#   bash bench/gpu_scale/pack_prebuilt.sh BUILD TREE
set -euo pipefail
BUILD=${1:?build directory}
TREE=${2:?llama.cpp tree (for gguf-py)}
mkdir -p .gpu_carry
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
cp "$BUILD"/_core*.so "$stage/"
find "$BUILD/ggml-build" -name 'libggml*.so*' -exec cp -P {} "$stage/" \;
strip --strip-unneeded "$stage"/*.so* 2>/dev/null || true
tar -cJf .gpu_carry/prebuilt.tar.xz -C "$stage" .
tar -czf .gpu_carry/gguf-py.tar.gz -C "$TREE" gguf-py
ls -l .gpu_carry/prebuilt.tar.xz .gpu_carry/gguf-py.tar.gz
