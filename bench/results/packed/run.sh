#!/bin/bash
# Q4_K weights packed into our kernel's 16-row layout (2026-11-22): the Qwen models side by side with llama.cpp greedy,
# 8 prompts per task, 2 threads, greedy, 256 new tokens, every mode of ours.
# Usage, from the repository root on a quiet machine, with the native build of bench/README.md:
#   ADADECODE_LLAMACPP_PYTHON=/path/to/python-with-llama-cpp-python PYTHONPATH=build-native/pkg \
#       bash bench/results/packed/run.sh
set -euo pipefail
OUT=bench/results/packed
for model in qwen2.5-coder-1.5b qwen2.5-coder-0.5b; do
    for task in humaneval mtbench; do
        uptime
        python3 -m adadecode bench -m "$model" --task "$task" --limit 8 --max-tokens 256 -t 2 \
            --modes standard,adadecode,ngram,adadecode+ngram --anchors llamacpp -o "$OUT" --resume --no-progress
    done
done
uptime
# Standard decoding against llama.cpp greedy alone, on more prompts (issue 2's >= 0.95x):
python3 -m adadecode bench -m qwen2.5-coder-1.5b --task humaneval --limit 24 --max-tokens 256 -t 2 \
    --modes standard --anchors llamacpp -o "$OUT/standard" --resume --no-progress
uptime
