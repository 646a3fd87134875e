#!/bin/bash
# 2026-12-06's run again (the microbench, then our four modes against llama.cpp built for this CPU by
# bench/build_llamacpp.sh, AMX off), at 805278f, where the AVX-512 VNNI Q4_K kernel scales by vpdpwssd on Intel;
# results into this folder. With adadecode installed, nothing else running.
set -e
O=bench/results/roofline/intel-xeon-2026-12-07 exec bash "$(dirname "$0")/../intel-xeon-2026-12-06/run.sh"
