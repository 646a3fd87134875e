#!/bin/bash
# The AVX2 class emulated on an AVX-512 CPU: our kernels forced to the AVX2 family (matmul and attention), against
# llama.cpp built without AVX-512 (bash bench/build_llamacpp.sh --avx2-only). With adadecode installed, nothing else
# running.
set -e
cd "$(dirname "$0")/../../../.."  # the repository root
O=bench/results/roofline/avx2-attention-2026-12-05
BIN=${LLAMACPP_AVX2_BIN:-${ADADECODE_CACHE:-$HOME/.cache/adadecode}/llamacpp-bin-avx2/bin}
export ADADECODE_QMATMUL=avx2
uptime > $O/uptime.txt
# 1. The attention kernel alone, side by side: ggml's path (what an AVX2-only CPU ran before) against ours.
python bench/ab_builds.py --tokens-may-differ humaneval 9 qwen2.5-coder-1.5b \
    ggml-attention=:standard:ADADECODE_ATTENTION=0 avx2-attention=:standard:ADADECODE_ATTENTION=avx2 \
    > $O/attention-ab.md
uptime >> $O/uptime.txt
export ADADECODE_ATTENTION=avx2
# 2. Pass costs over k rows.
adadecode bench --micro -m qwen2.5-coder-1.5b -t 2 --reps 7 --no-progress -o $O/micro-avx2-family
uptime >> $O/uptime.txt
# 3. Decoding against llama.cpp's own AVX2 programs.
adadecode bench -m qwen2.5-coder-1.5b --task humaneval --limit 9 --max-tokens 256 -t 2 --no-progress \
    --modes standard,adadecode,ngram,adadecode+ngram --anchors llamacpp-bin,llamacpp-bin-ngram --llamacpp-bin "$BIN" \
    -o $O/decode-avx2-family
uptime >> $O/uptime.txt
echo done
