#!/bin/bash
# Whole 1.5B passes, the ratio of each row count to one row within each process (its own minimum over 5
# repetitions), for two builds' microbenches alternating (the order reversed every other round): median and range
# over N processes each. A process keeps its speed for its life, so a ratio within one is steadier than a best-of
# across processes.   per_process.sh N OLD_MICROBENCH NEW_MICROBENCH
set -euo pipefail
N=$1; OLD=$2; NEW=$3
MODEL=${MODEL:-${ADADECODE_CACHE:-$HOME/.cache/adadecode}/models/qwen2.5-coder-1.5b.gguf}
tmp=$(mktemp -d)
for i in $(seq "$N"); do
    if (( i % 2 )); then order="old new"; else order="new old"; fi
    for b in $order; do
        bin=$NEW; [ "$b" = old ] && bin=$OLD
        "$bin" "$MODEL" 2 5 200 mmap 2>/dev/null >"$tmp/$b-$i.json"
    done
done
python3 "$(dirname "$0")/../per_process_table.py" "$tmp" "$N" old new
rm -rf "$tmp"
