#!/usr/bin/env bash
# Decoding speed with and without other programs on the CPUs, the default thread count (which adapts to their load)
# against fixed counts. One `adadecode run` process per measurement, 128 tokens, greedy; the conditions alternate
# within each round. Tokens must be equal across every configuration of a mode (checked at the end).
#   bash run.sh [ROUNDS] [MODEL]        (ADADECODE=path/to/adadecode to use another install)
# Loads: `yes` (CPU-bound, normal priority), `nice -n 19 yes`, and `yes` started 1.5 s into the run ("late");
# LOADS="quiet yes" runs only those loads, MODES="adadecode+ngram" only that mode; THREADS="auto noadapt" replaces
# the thread settings of every load (noadapt: the default count with ADADECODE_ADAPT_THREADS=0, one thread per core
# whatever the load). Runs go to raw-NAME/, the table to NAME.md (NAME=all-loads by default).
set -euo pipefail
ROUNDS=${1:-3}
MODEL=${2:-qwen2.5-coder-1.5b}
A=${ADADECODE:-adadecode}
LOADS=${LOADS:-quiet yes late nice}
NAME=${NAME:-all-loads}
O=$(cd "$(dirname "$0")" && pwd)/raw-$NAME
mkdir -p "$O"
PROMPTS=(
  "Write a Python function that returns the n-th Fibonacci number, with a docstring and tests."
  "Write a Python function is_palindrome(s) that ignores case and punctuation, with doctests."
  "Write a Python class Stack with push, pop, peek and is_empty, and unit tests for it."
)
one() {  # load mode threads prompt_index round
  local load=$1 mode=$2 threads=$3 p=$4 r=$5 hog=""
  local flags=(-m "$MODEL" -p "${PROMPTS[$p]}" -n 128 --mode "$mode" --json)
  [ "$mode" != standard ] && flags+=(--heads auto)
  local env=()
  case $threads in
    auto) ;;
    noadapt) env=(ADADECODE_ADAPT_THREADS=0) ;;
    *) flags+=(-t "$threads") ;;
  esac
  case $load in
    yes) yes > /dev/null & hog=$!; sleep 0.5 ;;
    nice) nice -n 19 yes > /dev/null & hog=$!; sleep 0.5 ;;
    late) (sleep 1.5; exec yes > /dev/null) & hog=$! ;;
  esac
  env "${env[@]}" "$A" run "${flags[@]}" > "$O/$load-$mode-$threads-p$p-r$r.json" 2> "$O/$load-$mode-$threads-p$p-r$r.err"
  if [ -n "$hog" ]; then kill "$hog" 2> /dev/null || true; wait "$hog" 2> /dev/null || true; fi
}
uptime > "$O/uptime-start.txt"
for r in $(seq 1 "$ROUNDS"); do
  for p in 0 1 2; do
    for mode in ${MODES:-standard adadecode+ngram}; do
      order=(auto 2); [ $((r % 2)) = 0 ] && order=(2 auto)
      for load in $LOADS; do
        threads=("${order[@]}"); [ "$load" = yes ] && threads+=(1)
        if [ -n "${THREADS:-}" ]; then
          read -ra threads <<< "$THREADS"; [ $((r % 2)) = 0 ] && threads=($(printf '%s\n' "${threads[@]}" | tac))
        fi
        for t in "${threads[@]}"; do one "$load" "$mode" "$t" "$p" "$r"; done
      done
    done
  done
done
uptime > "$O/uptime-end.txt"
python3 "$(dirname "$0")/table.py" "$O" > "$O/../$NAME.md"
cat "$O/../$NAME.md"
