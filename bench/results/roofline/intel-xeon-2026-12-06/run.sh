#!/bin/bash
# Intel Xeon (family 6 model 207, Emerald Rapids; AVX-512 VNNI, AVX-VNNI, AMX) under KVM, 2 cores: our default kernels
# (AVX-512 VNNI matmul, AVX-512 attention) against llama.cpp built for this CPU (bash bench/build_llamacpp.sh, AMX
# off), then the kernel families side by side. With adadecode installed, nothing else running.
set -e
cd "$(dirname "$0")/../../../.."  # the repository root
O=${O:-bench/results/roofline/intel-xeon-2026-12-06}  # a later run's folder (intel-xeon-2026-12-07/run.sh)
BIN=${LLAMACPP_BIN:-${ADADECODE_CACHE:-$HOME/.cache/adadecode}/llamacpp-bin/bin}
uptime > $O/uptime.txt
adadecode bench --micro -m qwen2.5-coder-1.5b -t 2 --reps 7 --no-progress -o $O/micro
uptime >> $O/uptime.txt
adadecode bench -m qwen2.5-coder-1.5b --task humaneval --limit 9 --max-tokens 256 -t 2 --no-progress \
    --modes standard,adadecode,ngram,adadecode+ngram --anchors llamacpp-bin,llamacpp-bin-ngram --llamacpp-bin "$BIN" \
    -o $O/decode
uptime >> $O/uptime.txt
echo done
