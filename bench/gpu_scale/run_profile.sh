#!/usr/bin/env bash
# Kernel by kernel: why a pass over k rows costs more than one row on the GPU (bench/gpu_scale/README.md). For a
# short lease: no build there. adadecode's CUDA build (the same flags as run_gpu.sh, Python 3.12 for the GPU image)
# comes prebuilt from this machine in .gpu_carry/prebuilt.tar.xz, gguf-py in .gpu_carry/gguf-py.tar.gz
# (bench/gpu_scale/pack_prebuilt.sh makes both). Writes a synthetic Llama-3.1-8B (Q4_K_M mix, --layers N), then
# per row count one `ncu` process timing every kernel of one pass (CUDA graphs off so that ncu sees the kernels;
# their durations do not depend on graphs), and the pass itself with graphs on. First, parity_check.py: multi-row
# passes bitwise equal to one-row decoding on that model.
#
#   bash bench/gpu_scale/run_profile.sh [--layers N] [--rows "1 2 4 8"] [--no-logits-pass]
#   device call: carry [".gpu_carry/prebuilt.tar.xz", ".gpu_carry/gguf-py.tar.gz"], timeout_s <= 300
set -uo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
LAYERS=4
ROWS="1 2 4 8"
LOGITS_PASS=1 # also the one-row pass with logits under ncu
while [ $# -gt 0 ]; do
    case "$1" in
    --layers) LAYERS=$2; shift ;;
    --rows) ROWS=$2; shift ;;
    --no-logits-pass) LOGITS_PASS=0 ;;
    -h | --help) sed -n 2,10p "$0"; exit 0 ;;
    *) echo "run_profile.sh: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done
OUT=${OUT:-$ROOT/gpu_profile_out}
WORK=${WORK:-$ROOT/.gpu_work}
PYTHON=${PYTHON:-python3}
DEVICE=${DEVICE:-gpu} # CPU: a dry run of the bundle where there is no GPU (with any `ncu` on PATH)
mkdir -p "$OUT" "$WORK/prebuilt" "$WORK/models"
LOG="$OUT/profile.log"
START=$(date +%s)
log() { echo "[$(($(date +%s) - START))s] $*" | tee -a "$LOG" >&2; }
export PYTHONUNBUFFERED=1

tar -xJf "$ROOT/.gpu_carry/prebuilt.tar.xz" -C "$WORK/prebuilt" || { log "no prebuilt bundle"; exit 2; }
tar -xzf "$ROOT/.gpu_carry/gguf-py.tar.gz" -C "$WORK" || { log "no gguf-py"; exit 2; }
mkdir -p "$WORK/pkg/adadecode"
for f in "$ROOT"/python/adadecode/*; do ln -sfn "$f" "$WORK/pkg/adadecode/"; done
ln -sfn "$WORK"/prebuilt/_core*.so "$WORK/pkg/adadecode/"
export PYTHONPATH="$WORK/pkg:$WORK/gguf-py${PYTHONPATH:+:$PYTHONPATH}"
export LD_LIBRARY_PATH="$WORK/prebuilt${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
{ nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; ncu --version | tail -1; } >>"$LOG" 2>&1

MODEL="$WORK/models/llama-3.1-8b-q4_k_m-${LAYERS}l.gguf"
[ -f "$MODEL" ] || "$PYTHON" "$ROOT/bench/synth_gguf.py" llama-3.1-8b q4_k_m -o "$MODEL" -q --layers "$LAYERS" \
    >>"$LOG" 2>&1 || { log "synth failed"; exit 1; }
log "model $(du -h "$MODEL" | cut -f1); bitwise parity of multi-row passes (parity_check.py):"
"$PYTHON" "$ROOT/bench/gpu_scale/parity_check.py" "$MODEL" --device "$DEVICE" -o "$OUT/parity.json" 2>&1 |
    grep -v "^ggml_backend_cuda_graph_compute" | tee -a "$LOG"
log "passes with CUDA graphs on:"
for logits in 0 8; do
    "$PYTHON" "$ROOT/bench/gpu_scale/kernel_profile.py" "$MODEL" --rows "${ROWS// /,}" --logit-rows $logits \
        --device "$DEVICE" --no-profiler 2>&1 | tee -a "$LOG"
    GGML_CUDA_DISABLE_GRAPHS=1 "$PYTHON" "$ROOT/bench/gpu_scale/kernel_profile.py" "$MODEL" --rows "${ROWS// /,}" \
        --logit-rows $logits --device "$DEVICE" --no-profiler 2>&1 | sed 's/^/graphs off: /' | tee -a "$LOG"
done

# One process per pass: the 1-row pass with its logits (what standard decoding runs per token), then k rows.
csvs=()
for k in $([ "$LOGITS_PASS" = 1 ] && echo 1L) $ROWS; do
    log "ncu, $k rows"
    GGML_CUDA_DISABLE_GRAPHS=1 timeout 120 ncu --profile-from-start off --clock-control none \
        --metrics gpu__time_duration.sum --csv --print-units base \
        "$PYTHON" "$ROOT/bench/gpu_scale/kernel_profile.py" "$MODEL" --rows "${k%L}" --device "$DEVICE" \
        --logit-rows "$([ "$k" = 1L ] && echo 1 || echo 0)" >"$OUT/ncu-rows$k.csv" 2>>"$LOG" ||
        log "ncu for $k rows failed (rc $?)"
    csvs+=("$OUT/ncu-rows$k.csv")
done
"$PYTHON" "$ROOT/bench/gpu_scale/kernel_profile.py" --summarize "${csvs[@]}" >"$OUT/kernels.md" 2>>"$LOG" ||
    log "summary failed"
cat "$OUT/kernels.md"
log "done"
