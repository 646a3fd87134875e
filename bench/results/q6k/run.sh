#!/bin/bash
# Q6_K packed too, exit layers merged into one pass where they do not check, 2 MiB pages for the packed weights
# (2026-11-22, session 6): the Qwen models side by side with llama.cpp greedy and llama.cpp prompt lookup, the same
# 8 prompts per task as results/packed/, 2 threads, greedy, 256 new tokens, every mode of ours; then the
# microbenchmarks and the prompt-lookup oracle bound (bench/ngram_oracle.py).
# Usage, from the repository root on a quiet machine, with the native build of bench/README.md:
#   ADADECODE_LLAMACPP_PYTHON=/path/to/python-with-llama-cpp-python PYTHONPATH=build-native/pkg \
#       bash bench/results/q6k/run.sh
set -euo pipefail
OUT=bench/results/q6k
MODELS=~/.cache/adadecode/models
for model in qwen2.5-coder-1.5b qwen2.5-coder-0.5b; do
    for task in humaneval mtbench; do
        uptime
        python3 -m adadecode bench -m "$model" --task "$task" --limit 8 --max-tokens 256 -t 2 \
            --modes standard,adadecode,ngram,adadecode+ngram --anchors llamacpp,llamacpp-ngram -o "$OUT" --resume \
            --no-progress
    done
    build-native/adadecode-microbench "$MODELS/$model.gguf" 2 7 200 mmap,file > "$OUT/microbench-$model-t2.json"
done
for task in humaneval mtbench; do
    python3 bench/ngram_oracle.py "$OUT/qwen2.5-coder-1.5b-$task.json" "$OUT/microbench-qwen2.5-coder-1.5b-t2.json"
done | tee "$OUT/ngram-oracle.txt"
uptime
