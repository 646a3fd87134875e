#!/bin/bash
# Fine-tune the shipped 1.5B heads on the model's own answers, then evaluate against the shipped file.
set -e
cd /tmp/ft
A=/work/venv-bench/bin/adadecode
F=/root/.cache/adadecode/features/qwen2.5-coder-1.5b-self
H=/work/main/python/adadecode/heads/qwen2.5-coder-1.5b.heads.gguf
CURVE=/work/main/bench/results/heads-1.5b/time-accounting-2026-12-06/curve-humaneval.json
TAG=${1:-a}; LR=${2:-0.0005}; STEPS=${3:-600}
$A train-heads -m qwen2.5-coder-1.5b -o /tmp/ft/ft-$TAG.heads.gguf --features $F --layers 7,21 --designs dense \
    --init $H --steps $STEPS --batch 512 --lr $LR --seed 0 --holdout-every 10 --checkpoint-every 50 --threads 2 \
    --curve $CURVE --write-layers 7,21 --workdir /tmp/ft/work-$TAG --no-progress > /tmp/ft/train-$TAG.log 2>&1
for heads in $H /tmp/ft/ft-$TAG.heads.gguf; do
  name=$(basename $heads .heads.gguf)
  [ -f /tmp/ft/eval-feat-$name.txt ] || $A eval-heads -m qwen2.5-coder-1.5b --heads $heads --features $F --holdout-every 10 --curve $CURVE --threads 2 --no-progress > /tmp/ft/eval-feat-$name.txt 2>&1
  [ -f /tmp/ft/eval-mix-$name.txt ] || $A eval-heads -m qwen2.5-coder-1.5b --heads $heads --features /root/.cache/adadecode/features/qwen2.5-coder-1.5b --holdout-every 10 --curve $CURVE --threads 2 --no-progress > /tmp/ft/eval-mix-$name.txt 2>&1
done
for t in humaneval mtbench /work/main/bench/heldout/networkx-code.jsonl; do
  n=$(basename $t .jsonl)
  $A eval-heads -m qwen2.5-coder-1.5b --heads /tmp/ft/ft-$TAG.heads.gguf --task $t --limit 12 --gen-tokens 96 --curve $CURVE --no-progress > /tmp/ft/eval-$n-$TAG.txt 2>&1
done
echo done $TAG
