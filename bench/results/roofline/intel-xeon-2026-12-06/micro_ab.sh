#!/bin/bash
# Whole 1.5B passes (adadecode-microbench, 2 threads, position 200, 5 reps per process) for settings side by side:
# ROUNDS rounds of alternating processes (the order reversed every other round), then the best (least) seconds per
# row count and setting. This VM hands out fast and slow processes and noise only slows one, so best-of compares like
# with like.
#   micro_ab.sh ROUNDS LABEL=VAR=VALUE[,VAR=VALUE...] ...      e.g. old=ADADECODE_QMATMUL_PREFETCH_ROWS=3 new=
# MB=path: the microbench to run (default: the installed one); BIN=path as a setting: that one for this setting.
set -euo pipefail
ROUNDS=$1; shift
MB=${MB:-$(python -c 'from adadecode.bench.micro import find_microbench; print(find_microbench(None)[0])')}
MODEL=${MODEL:-${ADADECODE_CACHE:-$HOME/.cache/adadecode}/models/qwen2.5-coder-1.5b.gguf}
tmp=$(mktemp -d)
for i in $(seq "$ROUNDS"); do
    # Every other round in reverse order: on this VM the first process of a round ran ~5 % faster than the second.
    specs=("$@")
    if (( i % 2 == 0 )); then
        specs=(); for (( j = $#; j >= 1; j-- )); do specs+=("${!j}"); done
    fi
    for spec in "${specs[@]}"; do
        label=${spec%%=*}; settings=${spec#*=}
        mb=$MB  # BIN=path in a setting: that build's microbench
        for kv in ${settings//,/ }; do [[ $kv == BIN=* ]] && mb=${kv#BIN=}; done
        env ${settings//,/ } "$mb" "$MODEL" 2 5 200 mmap 2>/dev/null >"$tmp/$label.$i.json"
    done
done
python3 - "$tmp" "$@" <<'P'
import glob, json, sys
tmp, specs = sys.argv[1], sys.argv[2:]
print("| setting | family | prefetch from | " + " | ".join(f"{k} rows" for k in range(1, 9)) + " |")
print("|---" * 11 + "|")
for spec in specs:
    label, settings = spec.split("=", 1)
    runs = [json.load(open(f)) for f in sorted(glob.glob(f"{tmp}/{label}.*.json"))]
    best = {k: min(r["rows"][str(k)]["seconds"] for r in runs) for k in range(1, 9)}
    cells = [f"{1e3 * best[1]:.1f} ms"] + [f"{1e3 * best[k]:.1f} ms ({best[k] / best[1]:.2f})" for k in range(2, 9)]
    print(f"| {label} (`{settings or 'defaults'}`) | {runs[0]['qmatmul_family']} | {runs[0].get('prefetch_min_rows')} | "
          + " | ".join(cells) + " |")
P
rm -rf "$tmp"
