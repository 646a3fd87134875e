#!/usr/bin/env bash
# The microbench with software prefetch from 3 rows (this class's default) and from 1 row, alternating processes,
# each run's streaming reads printed beside its passes, so that runs can be compared within one memory state.
# Usage: bash prefetch_rows_by_state.sh PAIRS > prefetch-rows-by-state.txt   (from the repository root's build-py)
set -euo pipefail
pairs=${1:-8}
bench=${MICROBENCH:-build-py/adadecode-microbench}
model=${MODEL:-$HOME/.cache/adadecode/models/qwen2.5-coder-1.5b.gguf}
for _ in $(seq "$pairs"); do
    for rows in 3 1; do
        ADADECODE_QMATMUL_PREFETCH_ROWS=$rows "$bench" "$model" 2 9 200 mmap 2>/dev/null | python3 -c "
import json, sys
d = json.load(sys.stdin)
r = d['mmap']['rows']
print('prefetch_rows=$rows', 'read_gbs=' + ','.join(map(str, d['read_gbs_samples'])),
      ' '.join(f'{k}:{r[k][\"seconds\"] * 1e3:.1f}' for k in map(str, range(1, 9))))"
    done
done
