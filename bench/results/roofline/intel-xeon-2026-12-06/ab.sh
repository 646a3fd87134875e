#!/usr/bin/env bash
# Side by side in one run (bench/ab_builds.py, fresh workers per prompt), the installed build (2c06cee) only:
#   prefetch: the packed kernels prefetching from three rows (ADADECODE_QMATMUL_PREFETCH_ROWS=3, what every CPU did
#             before 2c06cee) against this CPU's default (from one row on Intel), in three modes;
#   families: the AVX2 family against AVX-VNNI (the code an Intel laptop since Alder Lake runs), AVX2 attention.
# Intel Xeon (Emerald Rapids) under KVM, 2 threads, 256 tokens, 9 HumanEval prompts. Usage: ab.sh prefetch|families
set -euo pipefail
cd "$(dirname "$0")"
MODEL=${MODEL:-qwen2.5-coder-1.5b}
TASK=${TASK:-humaneval}
case "$1" in
prefetch)
    P=ADADECODE_QMATMUL_PREFETCH_ROWS=3
    python ../../../ab_builds.py --fresh-workers --per-prompt "$TASK" 9 "$MODEL" \
        from3-standard=/nonexistent:standard:$P standard=/nonexistent:standard \
        from3-adadecode=/nonexistent:adadecode:$P adadecode=/nonexistent:adadecode \
        from3-adadecode+ngram=/nonexistent:adadecode+ngram:$P adadecode+ngram=/nonexistent:adadecode+ngram
    ;;
families)
    A=ADADECODE_QMATMUL=avx2:ADADECODE_ATTENTION=avx2
    V=ADADECODE_QMATMUL=avxvnni:ADADECODE_ATTENTION=avx2
    python ../../../ab_builds.py --fresh-workers --per-prompt "$TASK" 9 "$MODEL" \
        avx2-standard=/nonexistent:standard:$A avxvnni-standard=/nonexistent:standard:$V \
        avx2-adadecode=/nonexistent:adadecode:$A avxvnni-adadecode=/nonexistent:adadecode:$V \
        avx2-adadecode+ngram=/nonexistent:adadecode+ngram:$A avxvnni-adadecode+ngram=/nonexistent:adadecode+ngram:$V
    ;;
*) echo "usage: ab.sh prefetch|families" >&2; exit 2 ;;
esac
