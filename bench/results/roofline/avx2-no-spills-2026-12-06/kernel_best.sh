#!/bin/bash
# In-cache kernel rates, old build against new, both forced to the AVX2 family: every binary runs in its own process,
# alternating, ROUNDS times; the table gives the best GMAC/s per binary and row count (noise here only slows a
# process down, and this VM hands out fast and slow processes: best-of compares like with like).
#   bash kernel_best.sh TYPE N_IN N_OUT THREADS REPS ROUNDS OLD_KERNELBENCH NEW_KERNELBENCH
# e.g. bash kernel_best.sh q4_k 1536 512 1 100 10 /tmp/build-old/adadecode-kernelbench build-py/adadecode-kernelbench
T=$1; NI=$2; NO=$3; TH=$4; R=$5; N=$6; shift 6
for i in $(seq "$N"); do
    for bin in "$@"; do
        ADADECODE_QMATMUL=${FAMILY:-avx2} "$bin" "$T" 1 "$NI" "$NO" "$TH" "$R" | grep -E "^rows" | sed "s|^|$bin |"
    done
done | python3 -c "
import collections, re, sys
rates = collections.defaultdict(list)
bins = []
for line in sys.stdin:
    m = re.match(r'(\S+) rows (\d+):.*?([\d.]+) GMAC/s', line)
    if m.group(1) not in bins:
        bins.append(m.group(1))
    rates[(m.group(1), int(m.group(2)))].append(float(m.group(3)))
print('| rows | ' + ' | '.join(bins) + ' |')
print('|---' * (len(bins) + 1) + '|')
for k in sorted({k for _, k in rates}):
    print(f'| {k} | ' + ' | '.join(f'{max(rates[(b, k)]):.1f}' for b in bins) + ' |')
"
