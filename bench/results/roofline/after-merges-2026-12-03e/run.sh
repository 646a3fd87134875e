#!/bin/bash
set -e
# with adadecode installed; training paused (SIGSTOP) during the run
cd "$(dirname "$0")/../../../.."  # the repository root
O=bench/results/roofline/after-merges-2026-12-03e
uptime > $O/uptime.txt
adadecode bench --micro -m qwen2.5-coder-1.5b -t 2 --reps 7 --no-progress -o $O/micro-avx512-zen4
ADADECODE_QMATMUL=avx2 adadecode bench --micro -m qwen2.5-coder-1.5b -t 2 --reps 7 --no-progress -o $O/micro-avx2-family-on-avx512-zen4
uptime >> $O/uptime.txt
ADADECODE_QMATMUL=avx2 ADADECODE_ATTENTION=0 adadecode bench -m qwen2.5-coder-1.5b --task humaneval --limit 9 --max-tokens 256 -t 2 --no-progress \
    --modes standard,ngram --anchors llamacpp-bin,llamacpp-bin-ngram --llamacpp-bin "${LLAMACPP_AVX2_BIN:-/tmp/lcpp-avx2/bin}" -o $O/decode-avx2-family-on-avx512-zen4
uptime >> $O/uptime.txt
echo done
