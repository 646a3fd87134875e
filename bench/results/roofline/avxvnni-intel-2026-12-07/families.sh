#!/bin/bash
# per-process k-row ratios for several kernel families of one build.  fam.sh N BIN fam...
set -euo pipefail
N=$1; BIN=$2; shift 2
MODEL=$HOME/.cache/adadecode/models/qwen2.5-coder-1.5b.gguf
out=${OUTDIR:-/tmp/fam/out}; mkdir -p $out; rm -f $out/*.json
for i in $(seq "$N"); do
  for f in "$@"; do ADADECODE_QMATMUL=$f "$BIN" "$MODEL" 2 5 200 mmap 2>/dev/null > $out/$f-$i.json; done
done
python3 - "$out" "$N" "$@" <<'P'
import json, statistics, sys
out, n, fams = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| family | 1 row (median ms) | " + " | ".join(f"{k} rows" for k in range(2, 9)) + " |")
print("|---" * 9 + "|")
for b in fams:
    runs = [json.load(open(f"{out}/{b}-{i}.json")) for i in range(1, n + 1)]
    cells = []
    for k in range(2, 9):
        v = [r["rows"][str(k)]["seconds"] / r["rows"]["1"]["seconds"] for r in runs]
        cells.append(f"{statistics.median(v):.3f} ({min(v):.2f}-{max(v):.2f})")
    one = statistics.median(r["rows"]["1"]["seconds"] * 1e3 for r in runs)
    print(f"| {b} | {one:.1f} | " + " | ".join(cells) + " |")
P
