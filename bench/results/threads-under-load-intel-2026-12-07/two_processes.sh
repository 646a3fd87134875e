#!/usr/bin/env bash
# Two `adadecode run` processes at once on the same CPUs (two users of one machine, or two servers), each given
# `-t 2`, `-t 1` or the default (which adapts to the other's load): tokens/s of each and the threads it ended on.
#   bash two_processes.sh [ROUNDS] [TOKENS]        (ADADECODE=path/to/adadecode to use another install)
set -euo pipefail
ROUNDS=${1:-2}
N=${2:-32}
A=${ADADECODE:-adadecode}
P="Write a Python function that returns the n-th Fibonacci number, with a docstring and tests."
tmp=$(mktemp -d)
echo "| round | setting | process 1 | process 2 |"
echo "|---|---|---|---|"
for r in $(seq 1 "$ROUNDS"); do
  for setting in "-t 2" "-t 1" "default"; do
    flags=(); [ "$setting" != default ] && flags=($setting)
    for i in 1 2; do
      "$A" run -m qwen2.5-coder-1.5b -p "$P" -n "$N" --mode standard "${flags[@]}" 2> "$tmp/$i" > /dev/null &
    done
    wait
    row="| $r | $setting |"
    for i in 1 2; do row="$row $(tail -1 "$tmp/$i" | grep -o '[0-9.]* tok/s, [0-9]* threads\?') |"; done
    echo "$row"
  done
done
rm -rf "$tmp"
