#!/bin/bash
# Prompt-lookup drafts from the occurrence with the longest matching context, Q5_0 and Q8_0 weights packed
# (2026-11-22, session 8): both Qwen models side by side with llama.cpp greedy and llama.cpp prompt lookup, the same
# 8 prompts per task as results/prefetch/, 2 threads, greedy, 256 new tokens, every mode of ours; then the
# microbenchmarks and the prompt-lookup bounds (bench/ngram_oracle.py: the oracle and the engine's policy replayed).
# Usage, from the repository root on a quiet machine, with the native build of bench/README.md (BUILD: its folder):
#   ADADECODE_LLAMACPP_PYTHON=/path/to/python-with-llama-cpp-python PYTHONPATH=build-native/pkg \
#       bash bench/results/context/run.sh
set -euo pipefail
OUT=bench/results/context
BUILD=${BUILD:-build-native}
MODELS=~/.cache/adadecode/models
for model in qwen2.5-coder-1.5b qwen2.5-coder-0.5b; do
    for task in humaneval mtbench; do
        uptime
        python3 -m adadecode bench -m "$model" --task "$task" --limit 8 --max-tokens 256 -t 2 \
            --modes standard,adadecode,ngram,adadecode+ngram --anchors llamacpp,llamacpp-ngram -o "$OUT" --resume \
            --no-progress
    done
    "$BUILD/adadecode-microbench" "$MODELS/$model.gguf" 2 7 200 mmap,file > "$OUT/microbench-$model-t2.json"
done
for model in qwen2.5-coder-1.5b qwen2.5-coder-0.5b; do
    for task in humaneval mtbench; do
        python3 bench/ngram_oracle.py "$OUT/$model-$task.json" "$OUT/microbench-$model-t2.json" --max-draft 7
    done
done | tee "$OUT/ngram-oracle.txt"
uptime
