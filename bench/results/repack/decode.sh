#!/bin/bash
# Standard decoding tokens/s, mmapped vs repacked weights, alternating runs.
M=/root/.cache/adadecode/models/qwen2.5-coder-1.5b.gguf
for round in 1 2; do
  for flag in "" "--repack"; do
    uptime
    echo "flag=[$flag]"
    ./build/adadecode-cli -m $M -p "def fibonacci(n):" -n 24 -t 1 --temp 0 --json $flag | python3 -c "import json,sys; d=json.load(sys.stdin); s=d['stats']; print({k: s[k] for k in ('n_generated','prefill_seconds','decode_seconds','tokens_per_second')}, d['tokens'][:8])"
  done
done
