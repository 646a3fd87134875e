#!/usr/bin/env bash
# The AVX2 Q4_K/Q6_K kernels without spills (ea3bffc) against the build before (043a74e), both forced to the AVX2
# family on this AVX-512 CPU (ADADECODE_QMATMUL=avx2 ADADECODE_ATTENTION=avx2: the code an AVX2-only CPU runs),
# side by side (bench/ab_builds.py). OLD is a `pip install --target` of 043a74e with its libggml linked in:
#   git worktree add /tmp/old-src 043a74e && cd /tmp/old-src &&
#   pip install --no-deps --no-build-isolation --target /tmp/site-old -C build-dir=/tmp/build-old . &&
#   ln -s "$(python -c 'import libggml, os; print(os.path.dirname(libggml.__file__))')" /tmp/site-old/libggml
# The installed package is the new build. Quiet machine, AMD EPYC Zen 4, 2 threads, 256 tokens.
set -euo pipefail
cd "$(dirname "$0")"
OLD=${OLD:-/tmp/site-old}
MODEL=${MODEL:-qwen2.5-coder-1.5b}
TASK=${TASK:-humaneval}
ENV=ADADECODE_QMATMUL=avx2:ADADECODE_ATTENTION=avx2
python ../../../ab_builds.py --fresh-workers "$TASK" 9 "$MODEL" \
    old-standard="$OLD":standard:$ENV new-standard=/nonexistent:standard:$ENV \
    old-adadecode="$OLD":adadecode:$ENV new-adadecode=/nonexistent:adadecode:$ENV \
    old-adadecode+ngram="$OLD":adadecode+ngram:$ENV new-adadecode+ngram=/nonexistent:adadecode+ngram:$ENV
