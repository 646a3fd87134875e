#!/bin/bash
# The AVX2 code path against llama.cpp's AVX2 build on this Intel Xeon (issue 23's anchor for the AVX2 class, here
# emulated: our kernels forced to AVX2, llama.cpp built with `bash bench/build_llamacpp.sh --avx2-only`). 9 HumanEval
# prompts, 256 tokens, 2 threads, with adadecode installed at 1ef8df1 or later, nothing else running.
set -e
cd "$(dirname "$0")/../../../.."  # the repository root
O=bench/results/roofline/intel-avx2-q6k-2026-12-06
BIN=${LLAMACPP_BIN:-${ADADECODE_CACHE:-$HOME/.cache/adadecode}/llamacpp-bin-avx2/bin}
uptime > $O/uptime.txt
ADADECODE_QMATMUL=avx2 ADADECODE_ATTENTION=avx2 adadecode bench -m qwen2.5-coder-1.5b --task humaneval --limit 9 \
    --max-tokens 256 -t 2 --no-progress --modes standard,adadecode,ngram,adadecode+ngram \
    --anchors llamacpp-bin,llamacpp-bin-ngram --llamacpp-bin "$BIN" -o $O/decode-avx2
uptime >> $O/uptime.txt
