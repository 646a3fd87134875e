#!/bin/bash
# Every 4th HumanEval problem (0, 4, ..., 160: 41 prompts) on the 1.5B with the engine of the time, side by side:
# standard, ngram, adadecode+ngram and llama.cpp greedy; 2 threads, greedy, 256 new tokens. Issue 10's target
# (adadecode+ngram >= 2.2x llama.cpp greedy on HumanEval) checked on a spread of the task rather than its first 8.
# Usage, from the repository root on a quiet machine, with the native build of bench/README.md:
#   ADADECODE_LLAMACPP_PYTHON=/path/to/python-with-llama-cpp-python PYTHONPATH=build-native/pkg \
#       bash bench/results/stride4/run.sh
set -euo pipefail
OUT=bench/results/stride4
TASK="$OUT/humaneval-every4th.jsonl"
python3 - "$TASK" <<'PY'
import json, sys
from adadecode.eval_heads import humaneval_prompts
from adadecode.fetch import cache_root
with open(sys.argv[1], "w") as f:
    for i, record in enumerate(humaneval_prompts(cache_root() / "data")):
        if i % 4 == 0:
            f.write(json.dumps(record.to_json()) + "\n")
PY
uptime
python3 -m adadecode bench -m qwen2.5-coder-1.5b --task "$TASK" --max-tokens 256 -t 2 \
    --modes standard,ngram,adadecode+ngram --anchors llamacpp -o "$OUT" --resume --no-progress
uptime
