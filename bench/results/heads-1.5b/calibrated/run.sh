#!/usr/bin/env bash
# The exit policy that decides token by token (ae35241) against the one before it (c0467d6), side by side in one
# process per build (bench/ab_builds.py). OLD is a `pip install --target` of c0467d6 with its libggml linked in:
#   git worktree add /tmp/old-src c0467d6 && cd /tmp/old-src &&
#   pip install --no-deps --no-build-isolation --target /tmp/site-old -C build-dir=/tmp/build-old . &&
#   ln -s "$(python -c 'import libggml, os; print(os.path.dirname(libggml.__file__))')" /tmp/site-old/libggml
# The installed package is the new build. Every configuration must produce standard decoding's tokens on every
# prompt (ab_builds stops otherwise). Run on a quiet machine; AVX-512 Zen 4, 2 threads, 256 tokens.
set -euo pipefail
cd "$(dirname "$0")"
OLD=${OLD:-/tmp/site-old}
MODEL=${MODEL:-qwen2.5-coder-1.5b}
# Machine state moves a run by 5-10 %: RUNS rounds, each task once per round (files PREFIXrunN-TASK.md; PREFIX
# names another model, e.g. PREFIX=0.5b- MODEL=qwen2.5-coder-0.5b).
for run in $(seq "${FIRST_RUN:-1}" "${RUNS:-3}"); do
    for task in humaneval mtbench; do
        "${PYTHON:-python}" ../../../ab_builds.py "$task" 9 "$MODEL" std=:standard old="$OLD":adadecode \
            new=:adadecode ngram=:ngram oldn="$OLD":adadecode+ngram newn=:adadecode+ngram |
            tee "${PREFIX:-}run$run-$task.md"
    done
done
