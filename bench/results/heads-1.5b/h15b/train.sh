#!/bin/bash
# 1.5B dense heads on the full 1.1M-position collection; resumable: rerun with --resume
cd /work/main
exec /work/venv-bench/bin/adadecode train-heads -m qwen2.5-coder-1.5b -o ~/.cache/adadecode/train/h15b/qwen2.5-coder-1.5b.heads.gguf \
  --features ~/.cache/adadecode/features/qwen2.5-coder-1.5b --layers 7,14,21 --designs dense \
  --steps 2400 --batch 512 --lr 0.002 --init lstsq --seed 0 --vocab-subset 16384 --holdout-every 10 \
  --checkpoint-every 50 --threads 2 --workdir ~/.cache/adadecode/train/h15b/work \
  --curve bench/results/roofline/after-merges-2026-12-03e/micro-avx512-zen4/micro-qwen2.5-coder-1.5b.json --write-layers 7,14,21 "$@"
