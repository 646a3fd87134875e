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
python3 - "$tmp" "$N" <<'P'
import json, statistics, sys
tmp, n = sys.argv[1], int(sys.argv[2])
print("| build | 1 row (median ms) | " + " | ".join(f"{k} rows" for k in range(2, 9)) + " |")
print("|---" * 9 + "|")
for b in ("old", "new"):
    runs = [json.load(open(f"{tmp}/{b}-{i}.json")) for i in range(1, n + 1)]
    cells = []
    for k in range(2, 9):
        v = [r["rows"][str(k)]["seconds"] / r["rows"]["1"]["seconds"] for r in runs]
        cells.append(f"{statistics.median(v):.3f} ({min(v):.2f}-{max(v):.2f})")
    one = statistics.median(r["rows"]["1"]["seconds"] * 1e3 for r in runs)
    print(f"| {b} | {one:.1f} | " + " | ".join(cells) + " |")
P
rm -rf "$tmp"
