#!/bin/bash
# One matrix in cache (adadecode-kernelbench TYPE 1 1536 8960 1 200) for settings side by side: ROUNDS rounds of
# alternating processes (the order reversed every other round), then the best (least) milliseconds per row count and
# setting, and its ratio to one row.
#   kb_ab.sh ROUNDS TYPE LABEL=[VAR=VALUE,...]:BINARY ...
#   e.g. kb_ab.sh 8 q4_k mulld=ADADECODE_QMATMUL_Q4K_SCALE=mulld:build-py/adadecode-kernelbench dpwssd=...
set -euo pipefail
ROUNDS=$1; TYPE=$2; shift 2
tmp=$(mktemp -d)
for i in $(seq "$ROUNDS"); do
    specs=("$@")  # every other round in reverse order (see micro_ab.sh)
    if (( i % 2 == 0 )); then
        specs=(); for (( j = $#; j >= 1; j-- )); do specs+=("${!j}"); done
    fi
    for spec in "${specs[@]}"; do
        label=${spec%%=*}; rest=${spec#*=}; settings=${rest%%:*}; bin=${rest#*:}
        env ${settings//,/ } "$bin" "$TYPE" 1 1536 8960 1 200 2>&1 | grep -E "^rows" |
            awk -v l="$label" '{gsub(":", "", $2); print l, $2, $3}' >>"$tmp/all"
    done
done
python3 - "$tmp/all" "$@" <<'P'
import collections, sys
best = collections.defaultdict(lambda: float("inf"))
for line in open(sys.argv[1]):
    label, rows, ms = line.split()
    best[label, int(rows)] = min(best[label, int(rows)], float(ms))
print("| setting | " + " | ".join(f"{k} rows" for k in range(1, 10)) + " |")
print("|---" * 10 + "|")
for spec in sys.argv[2:]:
    label = spec.split("=", 1)[0]
    print(f"| {label} | " + " | ".join(f"{best[label, k]:.3f} ms ({best[label, k] / best[label, 1]:.2f})" for k in range(1, 10)) + " |")
P
rm -rf "$tmp"
