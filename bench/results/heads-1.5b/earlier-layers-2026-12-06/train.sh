#!/bin/bash
cd "$(git rev-parse --show-toplevel)"
exec nice -n 5 adadecode train-heads -m qwen2.5-coder-1.5b -o ~/.cache/adadecode/train/h15c/qwen2.5-coder-1.5b.heads.gguf \
  --features ~/.cache/adadecode/features/qwen2.5-coder-1.5b --layers 10,18 --designs dense \
  --steps 1200 --batch 512 --lr 0.002 --init lstsq --seed 0 --vocab-subset 16384 --check-vocab 8192 --holdout-every 10 \
  --checkpoint-every 50 --threads 2 --workdir ~/.cache/adadecode/train/h15c/work \
  --curve bench/results/roofline/after-merges-2026-12-03e/micro-avx512-zen4/micro-qwen2.5-coder-1.5b.json --write-layers 10,18 --no-progress "$@"
