#!/usr/bin/env bash
# Pass costs each shape against its own one-row passes, by lower medians, in a curve that never falls
# (cpp/pass_costs.h), against the build before (82b1448), side by side (bench/ab_builds.py, fresh workers per
# prompt). OLD and NEW are `pip install --target` sites with their libggml linked in:
#   git worktree add /tmp/old-src 82b1448 && cd /tmp/old-src &&
#   pip install --no-deps --no-build-isolation --target /tmp/site-old -C build-dir=/tmp/build-old . &&
#   ln -s "$(python -c 'import libggml, os; print(os.path.dirname(libggml.__file__))')" /tmp/site-old/libggml
# (the same from this checkout for /tmp/site-new). AMD EPYC Zen 4, 2 threads, 256 tokens; ENV=KEY=VALUE[:...] sets
# worker environment variables, e.g. ENV=ADADECODE_QMATMUL=avx2:ADADECODE_ATTENTION=avx2 for the AVX2 family.
set -euo pipefail
OLD=${OLD:-/tmp/site-old}
NEW=${NEW:-/tmp/site-new}
MODEL=${MODEL:-qwen2.5-coder-1.5b}
TASK=${TASK:-humaneval}
N=${N:-9}
sfx=${ENV:+:$ENV}
python "$(dirname "$0")/../../ab_builds.py" --fresh-workers --per-prompt "$TASK" "$N" "$MODEL" \
    old-ngram="$OLD":ngram$sfx new-ngram="$NEW":ngram$sfx \
    old-adadecode="$OLD":adadecode$sfx new-adadecode="$NEW":adadecode$sfx \
    old-adadecode+ngram="$OLD":adadecode+ngram$sfx new-adadecode+ngram="$NEW":adadecode+ngram$sfx
