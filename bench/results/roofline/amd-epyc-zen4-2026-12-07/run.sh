#!/bin/bash
# AMD EPYC Zen 4 (AuthenticAMD family 25 model 17 stepping 1, Genoa) under KVM, 2 cores, 1 MiB L2 per core, 32 MiB
# L3. First the microbench N times (default 12), each between two runs of ccd_probe.cpp, to see how the k-row costs
# move with the VM's memory speed and vCPU placement (micro_states.py -> micro-states.md); then the 2026-12-06 run
# (the microbench, then our four modes against llama.cpp built for this CPU by bench/build_llamacpp.sh). Results into
# this folder. With adadecode installed, nothing else running.
set -e
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../../.."
g++ -O2 -march=native -pthread -o /tmp/ccd_probe "$here/ccd_probe.cpp"
for i in $(seq 1 "${1:-12}"); do
    mkdir -p "$here/micro-states/$i"
    /tmp/ccd_probe > "$here/micro-states/$i/probe-before.txt"
    adadecode bench --micro -m qwen2.5-coder-1.5b -t 2 --reps 7 --no-progress -o "$here/micro-states/$i" > /dev/null
    /tmp/ccd_probe > "$here/micro-states/$i/probe-after.txt"
done
python "$here/micro_states.py" "$here"/micro-states/*/micro-qwen2.5-coder-1.5b.json > "$here/micro-states.md"
O=bench/results/roofline/amd-epyc-zen4-2026-12-07 bash "$here/../intel-xeon-2026-12-06/run.sh"
