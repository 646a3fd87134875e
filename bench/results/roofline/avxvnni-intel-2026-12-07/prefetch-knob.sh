#!/bin/bash
# Whole 1.5B passes with the temporary prefetch knob of prefetch-knob.patch (not in the tree: apply it, build
# adadecode-microbench, give it as MB). Configurations LABEL:BLOCKS_AHEAD:HINT (hint 0 = into L1, 1 = into L2), each
# process running them in turn, N rounds; the kernel family from FAM.
#   MB=build/adadecode-microbench FAM=avxvnni prefetch-knob.sh 4 l1d1:1:0 l2d2:2:1 l2d4:4:1 l1d2:2:0
set -euo pipefail
N=$1; shift
MODEL=${MODEL:-${ADADECODE_CACHE:-$HOME/.cache/adadecode}/models/qwen2.5-coder-1.5b.gguf}
tmp=$(mktemp -d)
for i in $(seq "$N"); do
    for c in "$@"; do
        IFS=: read -r label blocks hint <<<"$c"
        EXP_DIST=$blocks EXP_HINT=$hint ADADECODE_QMATMUL=$FAM "$MB" "$MODEL" 2 5 200 mmap 2>/dev/null >"$tmp/$label-$i.json"
    done
done
labels=(); for c in "$@"; do labels+=("${c%%:*}"); done
python3 "$(dirname "$0")/../per_process_table.py" "$tmp" "$N" "${labels[@]}"
rm -rf "$tmp"
