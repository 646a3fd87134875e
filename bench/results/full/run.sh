#!/bin/bash
# The full task sets (HumanEval: 164 prompts, MT-Bench first turns: 80) for the issue-6 table, one model at a time,
# 2 threads, greedy, 256 new tokens, every mode of ours and the llama.cpp anchors, resumable (--resume).
# Usage, from the repository root on a quiet machine, with the native build of bench/README.md:
#   ADADECODE_LLAMACPP_PYTHON=/path/to/python-with-llama-cpp-python PYTHONPATH=build-native/pkg \
#       bash bench/results/full/run.sh smollm2-135m [qwen2.5-coder-0.5b ...]
set -euo pipefail
OUT=bench/results/full
for model in "$@"; do
    draft=()
    # llama.cpp's speculative decoding needs a smaller model of the same vocabulary: the 0.5B drafts for the 1.5B.
    if [ "$model" = qwen2.5-coder-1.5b ]; then draft=(--draft-model qwen2.5-coder-0.5b); fi
    for task in humaneval mtbench; do
        uptime
        python3 -m adadecode bench -m "$model" --task "$task" --max-tokens 256 -t 2 \
            --modes standard,adadecode,ngram,adadecode+ngram --anchors llamacpp,llamacpp-ngram,llamacpp-spec \
            "${draft[@]}" -o "$OUT" --resume --no-progress
    done
done
uptime
