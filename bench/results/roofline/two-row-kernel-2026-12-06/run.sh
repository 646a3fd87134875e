#!/usr/bin/env bash
# Whole-pass cost of 1..8 rows of the 1.5B with two rows through the two-row kernel (2) or the three-row one (3),
# alternating processes: adadecode-microbench MODEL threads reps position setups (JSON on stdout).
# Usage: bash run.sh [MICROBENCH=build-py/adadecode-microbench] [ROUNDS=3]
set -euo pipefail
mb=${MICROBENCH:-build-py/adadecode-microbench}
model=${ADADECODE_CACHE:-$HOME/.cache/adadecode}/models/qwen2.5-coder-1.5b.gguf
for round in $(seq "${ROUNDS:-3}"); do
    for width in 2 3; do
        ADADECODE_QMATMUL_TWO_ROWS=$width "$mb" "$model" 2 15 200 mmap > "/tmp/two-rows-$width.json"
        python3 -c "
import json, sys
d = json.load(open('/tmp/two-rows-$width.json')); f = d['mmap']['full_pass_seconds']
print('width', d['two_row_kernel'], 'ms', ' '.join('%5.1f' % (f[k] * 1e3) for k in f),
      '| x one row', ' '.join('%.2f' % (f[k] / f['1']) for k in f), '| read_gbs %.0f' % d['read_gbs'])"
    done
done
