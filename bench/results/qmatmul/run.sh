#!/bin/bash
# Our matmul kernel (ggml/ops/qmatmul) against ggml's mul_mat, side by side on one machine:
#  1. a full pass over all layers for 1..8 rows (adadecode-microbench, the two setups alternating rep by rep);
#  2. standard greedy decoding, 128 tokens, alternating ADADECODE_QMATMUL=0 (ggml) and the default (ours).
# Usage: bash bench/results/qmatmul/run.sh BUILD_DIR THREADS   (run from the repository root, on a quiet machine)
set -euo pipefail
BUILD=${1:-build}
THREADS=${2:-2}
OUT=bench/results/qmatmul
M=${ADADECODE_CACHE:-$HOME/.cache/adadecode}/models
for model in qwen2.5-coder-0.5b qwen2.5-coder-1.5b smollm2-135m; do
    uptime
    "$BUILD/adadecode-microbench" "$M/$model.gguf" "$THREADS" 7 200 mmap,ggml > "$OUT/microbench-$model-t$THREADS.json"
done
PROMPT="Write a Python function that parses an ISO 8601 date string and returns a datetime object. Include a docstring and examples."
for model in qwen2.5-coder-0.5b qwen2.5-coder-1.5b; do
    for round in 1 2 3; do
        for kernel in ggml ours; do
            if [ "$kernel" = ggml ]; then export ADADECODE_QMATMUL=0; else unset ADADECODE_QMATMUL; fi
            "$BUILD/adadecode-cli" -m "$M/$model.gguf" -p "$PROMPT" -n 128 -t "$THREADS" --temp 0 --json |
                python3 -c "import json,sys; d=json.load(sys.stdin); s=d['stats']; print(json.dumps({'model': '$model', 'kernel': '$kernel', 'round': $round, 'tokens_per_second': s['tokens_per_second'], 'prefill_seconds': s['prefill_seconds'], 'n_prompt': s['n_prompt'], 'tokens_head': d['tokens'][:16], 'n_generated': s['n_generated']}))"
        done
    done
done | tee "$OUT/decode-ab-t$THREADS.jsonl"
unset ADADECODE_QMATMUL
uptime
