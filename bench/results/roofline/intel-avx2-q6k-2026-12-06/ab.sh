#!/usr/bin/env bash
# Side by side in one run (bench/ab_builds.py, fresh workers per prompt): the AVX2 Q6_K kernel for one and two rows
# without prefetches (the installed build, 971f8dc) against with them (SITE_NEW: `pip install --target` of this
# commit), in the two families that run it: AVX2 and AVX-VNNI (the code an Intel laptop since Alder Lake runs), AVX2
# attention. Intel Xeon (Emerald Rapids) under KVM, 2 threads, 256 tokens, 9 HumanEval prompts.
#   pip install --no-deps --no-build-isolation --target /tmp/site-new -C build-dir=/tmp/build-new . &&
#   ln -s "$(python -c 'import libggml, os; print(os.path.dirname(libggml.__file__))')" /tmp/site-new/libggml
#   SITE_NEW=/tmp/site-new bash ab.sh [standard|adadecode|adadecode+ngram ...]
set -euo pipefail
cd "$(dirname "$0")"
MODEL=${MODEL:-qwen2.5-coder-1.5b}
TASK=${TASK:-humaneval}
NEW=${SITE_NEW:?a pip install --target of the new build}
A=ADADECODE_QMATMUL=avx2:ADADECODE_ATTENTION=avx2
V=ADADECODE_QMATMUL=avxvnni:ADADECODE_ATTENTION=avx2
configs=()
for mode in "${@:-standard}"; do
    configs+=("avx2-old-$mode=/nonexistent:$mode:$A" "avx2-new-$mode=$NEW:$mode:$A"
              "avxvnni-old-$mode=/nonexistent:$mode:$V" "avxvnni-new-$mode=$NEW:$mode:$V")
done
python ../../../ab_builds.py --fresh-workers --per-prompt "$TASK" 9 "$MODEL" "${configs[@]}"
