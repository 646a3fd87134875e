#!/bin/bash
cd /work/main
for t in mtbench humaneval bench/heldout/networkx-code.jsonl; do
  n=$(basename $t .jsonl)
  /work/venv-bench/bin/python bench/ab_builds.py --fresh-workers $t 9 qwen2.5-coder-1.5b std=/nonexistent:standard shipped=/nonexistent:adadecode ftb=/nonexistent:adadecode:heads=/tmp/ft/ft-b.heads.gguf > /tmp/ft/ab-$n.md 2> /tmp/ft/ab-$n.err
done
echo done
