#!/bin/bash
# Issue 24's benchmarks on an Intel Xeon (family 6 model 207, Emerald Rapids; AVX-512 VNNI, AVX-VNNI, AMX) under KVM,
# 2 cores, with the shipped heads: 9 prompts x 256 tokens, 2 threads, greedy, side by side, nothing else running.
# The AVX2 runs force the AVX2 matmul and attention kernels on this CPU: the AVX2 code path with this machine's memory,
# not an AVX2-only CPU.
set -e
cd "$(dirname "$0")/../../.."  # the repository root
O=bench/results/heads-intel-2026-12-06
MODES=standard,adadecode,ngram,adadecode+ngram
run() {  # OUT MODEL TASK [ENV...]
    local out=$1 model=$2 task=$3; shift 3
    uptime >> $O/uptime.txt
    env "$@" adadecode bench -m "$model" --task "$task" --limit 9 --max-tokens 256 -t 2 --no-progress \
        --modes $MODES --anchors none -o "$O/$out"
}
run 1.5b qwen2.5-coder-1.5b mtbench
run 0.5b qwen2.5-coder-0.5b humaneval
run 0.5b qwen2.5-coder-0.5b mtbench
run 1.5b-avx2 qwen2.5-coder-1.5b humaneval ADADECODE_QMATMUL=avx2 ADADECODE_ATTENTION=avx2
run 1.5b qwen2.5-coder-1.5b bench/heldout/networkx-code.jsonl
run 0.5b-avx2 qwen2.5-coder-0.5b humaneval ADADECODE_QMATMUL=avx2 ADADECODE_ATTENTION=avx2
uptime >> $O/uptime.txt
echo done
