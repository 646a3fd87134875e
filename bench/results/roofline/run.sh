#!/usr/bin/env bash
# The roofline tables of issue 23 and the decode anchors per CPU class, on one quiet machine, 2 threads.
# AVX-512 runs use the native kernels; "avx2-family" runs force our AVX2 kernels (ADADECODE_QMATMUL=avx2) on the same
# CPU and compare with a llama.cpp build without AVX-512 (LLAMACPP_AVX2_BIN, built with -DGGML_NATIVE=OFF
# -DGGML_AVX2=ON -DGGML_AVX512=OFF): an emulation of an AVX2-only CPU, not one (memory system and clocks stay Zen 4's).
# usage: bash bench/results/roofline/run.sh [LABEL]   (from the repository root, with adadecode installed)
set -euo pipefail
LABEL=${1:-avx512-zen4}
OUT=bench/results/roofline
LLAMACPP_AVX2_BIN=${LLAMACPP_AVX2_BIN:-/tmp/lcpp-avx2/bin}
M=qwen2.5-coder-1.5b

adadecode bench --micro -m $M -t 2 --reps 9 --no-progress -o "$OUT/micro-$LABEL"
ADADECODE_QMATMUL=avx2 adadecode bench --micro -m $M -t 2 --reps 9 --no-progress -o "$OUT/micro-avx2-family-on-$LABEL"

# Standard decoding and prompt lookup against llama.cpp's own greedy and prompt-lookup programs.
adadecode bench -m $M --task humaneval --limit 9 --max-tokens 256 -t 2 --no-progress \
    --modes standard,ngram,adadecode+ngram --anchors llamacpp-bin,llamacpp-bin-ngram -o "$OUT/decode-$LABEL"
ADADECODE_QMATMUL=avx2 adadecode bench -m $M --task humaneval --limit 9 --max-tokens 256 -t 2 --no-progress \
    --modes standard,ngram --anchors llamacpp-bin,llamacpp-bin-ngram --llamacpp-bin "$LLAMACPP_AVX2_BIN" \
    -o "$OUT/decode-avx2-family-on-$LABEL"
