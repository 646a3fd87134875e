#!/bin/bash
# Whole 1.5B passes (all layers, logits) over 1-8 rows, old build against new, both forced to the AVX2 family, in
# alternating processes, ROUNDS rounds; milliseconds per pass (fastest of 9 within each process) and the median over
# the rounds.   bash micro_ab.sh OLD_MICROBENCH NEW_MICROBENCH [ROUNDS=5]
MODEL=${MODEL:-$HOME/.cache/adadecode/models/qwen2.5-coder-1.5b.gguf}
for i in $(seq "${3:-5}"); do
    for b in old new; do
        bin=$1; [ $b = new ] && bin=$2
        ADADECODE_QMATMUL=avx2 ADADECODE_ATTENTION=avx2 "$bin" "$MODEL" 2 9 200 mmap 2>/dev/null |
            python3 -c "
import json, sys
text = sys.stdin.read()
rows = json.loads(text[text.index('{'):])['rows']
print('$b', ' '.join(f\"{rows[str(k)]['seconds'] * 1e3:.1f}\" for k in range(1, 9)))"
    done
done | python3 -c "
import statistics, sys
runs = {'old': [], 'new': []}
for line in sys.stdin:
    name, *ms = line.split()
    runs[name].append([float(x) for x in ms])
print('| build | ' + ' | '.join(f'{k} rows' for k in range(1, 9)) + ' |')
print('|---' * 9 + '|')
for name, rs in runs.items():
    for r in rs:
        print(f'| {name} | ' + ' | '.join(f'{x:.1f}' for x in r) + ' |')
for name, rs in runs.items():
    med = [statistics.median(col) for col in zip(*rs)]
    print(f'| **{name}, median** | ' + ' | '.join(f'{x:.1f} ({x / med[0]:.2f}x)' for x in med) + ' |')
"
