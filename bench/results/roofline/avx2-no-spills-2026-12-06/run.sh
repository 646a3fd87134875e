#!/bin/bash
# The AVX2 class emulated on an AVX-512 CPU after ea3bffc: our kernels forced to the AVX2 family (matmul and
# attention), against llama.cpp built without AVX-512 (bash bench/build_llamacpp.sh --avx2-only). With adadecode
# installed, nothing else running.
set -e
cd "$(dirname "$0")/../../../.."  # the repository root
O=bench/results/roofline/avx2-no-spills-2026-12-06
BIN=${LLAMACPP_AVX2_BIN:-${ADADECODE_CACHE:-$HOME/.cache/adadecode}/llamacpp-bin-avx2/bin}
export ADADECODE_QMATMUL=avx2 ADADECODE_ATTENTION=avx2
uptime > $O/uptime.txt
# 1. Pass costs over k rows.
adadecode bench --micro -m qwen2.5-coder-1.5b -t 2 --reps 7 --no-progress -o $O/micro-avx2-family
uptime >> $O/uptime.txt
# 2. Decoding against llama.cpp's own AVX2 programs.
adadecode bench -m qwen2.5-coder-1.5b --task humaneval --limit 9 --max-tokens 256 -t 2 --no-progress \
    --modes standard,adadecode,ngram,adadecode+ngram --anchors llamacpp-bin,llamacpp-bin-ngram --llamacpp-bin "$BIN" \
    -o $O/decode-avx2-family
uptime >> $O/uptime.txt
echo done
