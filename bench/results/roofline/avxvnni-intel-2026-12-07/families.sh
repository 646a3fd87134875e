#!/bin/bash
# Whole 1.5B passes for several kernel families of one build, in the same processes' order (each round runs every
# family once): per family, the ratio of each row count to one row within each process, median and range over N
# processes (see per_process.sh in ../tile-order-quantizer-intel-2026-12-07/).
#   families.sh N MICROBENCH FAMILY...    e.g. families.sh 5 build/adadecode-microbench avx512vnni avxvnni avx2
set -euo pipefail
N=$1; BIN=$2; shift 2
MODEL=${MODEL:-${ADADECODE_CACHE:-$HOME/.cache/adadecode}/models/qwen2.5-coder-1.5b.gguf}
tmp=$(mktemp -d)
for i in $(seq "$N"); do
    for f in "$@"; do ADADECODE_QMATMUL=$f "$BIN" "$MODEL" 2 5 200 mmap 2>/dev/null >"$tmp/$f-$i.json"; done
done
python3 "$(dirname "$0")/../per_process_table.py" "$tmp" "$N" "$@"
rm -rf "$tmp"
