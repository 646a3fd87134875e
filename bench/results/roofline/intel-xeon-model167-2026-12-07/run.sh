#!/bin/bash
# The 2026-12-06 run (the microbench, then our four modes against llama.cpp built for this CPU by
# bench/build_llamacpp.sh, AMX off) on another Intel Xeon VM: GenuineIntel family 6 model 167 stepping 1 under KVM,
# 2 MiB L2 per core, 480 MiB L3. Results into this folder. With adadecode installed, nothing else running.
set -e
O=bench/results/roofline/intel-xeon-model167-2026-12-07 exec bash "$(dirname "$0")/../intel-xeon-2026-12-06/run.sh"
