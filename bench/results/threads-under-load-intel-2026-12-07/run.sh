#!/usr/bin/env bash
# Decoding speed with and without other programs on the CPUs, the default thread count (which adapts to their load)
# against fixed counts. One `adadecode run` process per measurement, 128 tokens, greedy; the conditions alternate
# within each round. Tokens must be equal across every configuration of a mode (checked at the end).
#   bash run.sh [ROUNDS] [MODEL]        (ADADECODE=path/to/adadecode to use another install)
# Loads: `yes` (CPU-bound, normal priority), `nice -n 19 yes`, and `yes` started 1.5 s into the run ("late").
set -euo pipefail
ROUNDS=${1:-3}
MODEL=${2:-qwen2.5-coder-1.5b}
A=${ADADECODE:-adadecode}
O=$(cd "$(dirname "$0")" && pwd)/raw
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
  [ "$threads" != auto ] && flags+=(-t "$threads")
  case $load in
    yes) yes > /dev/null & hog=$!; sleep 0.5 ;;
    nice) nice -n 19 yes > /dev/null & hog=$!; sleep 0.5 ;;
    late) (sleep 1.5; exec yes > /dev/null) & hog=$! ;;
  esac
  "$A" run "${flags[@]}" > "$O/$load-$mode-$threads-p$p-r$r.json" 2> /dev/null
  if [ -n "$hog" ]; then kill "$hog" 2> /dev/null || true; wait "$hog" 2> /dev/null || true; fi
}
uptime > "$O/uptime-start.txt"
for r in $(seq 1 "$ROUNDS"); do
  for p in 0 1 2; do
    for mode in standard adadecode+ngram; do
      order=(auto 2); [ $((r % 2)) = 0 ] && order=(2 auto)
      for t in "${order[@]}"; do one quiet "$mode" "$t" "$p" "$r"; done
      for t in "${order[@]}" 1; do one yes "$mode" "$t" "$p" "$r"; done
      for t in "${order[@]}"; do one late "$mode" "$t" "$p" "$r"; done
      for t in "${order[@]}"; do one nice "$mode" "$t" "$p" "$r"; done
    done
  done
done
uptime > "$O/uptime-end.txt"
python3 - "$O" > "$O/../results.md" <<'PY'
import json, statistics, sys, collections
from pathlib import Path
raw = Path(sys.argv[1])
runs = collections.defaultdict(list)
tokens = collections.defaultdict(set)
for f in sorted(raw.glob("*.json")):
    load, mode, threads, p, r = f.stem.split("-")
    d = json.loads(f.read_text())
    runs[(load, mode, threads)].append((p, d["stats"]["tokens_per_second"], d["stats"].get("threads")))
    tokens[(mode, p)].add(tuple(d["tokens"]))
print("| load | mode | -t | tok/s (median over prompts x rounds) | runs | threads at the end |")
print("|---|---|---|---|---|---|")
for (load, mode, threads), v in sorted(runs.items()):
    ends = collections.Counter(t for _, _, t in v)
    print(f"| {load} | {mode} | {threads} | {statistics.median(x for _, x, _ in v):.1f} | {len(v)} | "
          + ", ".join(f"{k}: {n}" for k, n in sorted(ends.items())) + " |")
same = all(len(s) == 1 for s in tokens.values())
print(f"\nTokens equal across every load and thread count, per mode and prompt: {'yes' if same else 'NO'} "
      f"({len(tokens)} mode x prompt pairs)")
PY
cat "$O/../results.md"
