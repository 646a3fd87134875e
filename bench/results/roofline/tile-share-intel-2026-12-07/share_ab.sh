#!/bin/bash
# Whole 1.5B passes with and without TileShare in the same process (adadecode-microbench setups mmap and static,
# timed alternately rep by rep; the setups' order reversed every other process): the ratio shared / static per row
# count, median and range over N processes. HOG=1 keeps a CPU-bound process (`yes`) running beside each one, as
# another program on the machine would.   share_ab.sh N MICROBENCH [REPS]
set -euo pipefail
N=$1; MB=$2; REPS=${3:-20}
MODEL=${MODEL:-${ADADECODE_CACHE:-$HOME/.cache/adadecode}/models/qwen2.5-coder-1.5b.gguf}
tmp=$(mktemp -d)
for i in $(seq "$N"); do
    if (( i % 2 )); then order=mmap,static; else order=static,mmap; fi
    hog=""
    if [ "${HOG:-0}" = 1 ]; then yes > /dev/null & hog=$!; fi
    "$MB" "$MODEL" 2 "$REPS" 200 "$order" 2>/dev/null >"$tmp/$i.json"
    if [ -n "$hog" ]; then kill "$hog"; wait "$hog" 2>/dev/null || true; fi
done
python3 - "$tmp" "$N" <<'P'
import json, statistics, sys
tmp, n = sys.argv[1], int(sys.argv[2])
runs = [json.load(open(f"{tmp}/{i}.json")) for i in range(1, n + 1)]
print("| rows | static (median ms) | shared (median ms) | shared / static, median over processes | range |")
print("|---|---|---|---|---|")
for k in range(1, 9):
    s = [r["static"]["rows"][str(k)]["seconds"] for r in runs]
    m = [r["mmap"]["rows"][str(k)]["seconds"] for r in runs]
    q = [a / b for a, b in zip(m, s)]
    print(f"| {k} | {statistics.median(s) * 1e3:.1f} | {statistics.median(m) * 1e3:.1f} | {statistics.median(q):.3f} "
          f"| {min(q):.3f}-{max(q):.3f} |")
P
rm -rf "$tmp"
