#!/usr/bin/env bash
# Layer parallelism at the model sizes it is made for, on a GPU, in one prepared run (bench/gpu_scale/README.md):
# builds adadecode with CUDA and llama.cpp's llama-bench from the carried llama.cpp tree, writes synthetic models
# of real shapes (Llama-3.1-8B, Qwen2.5-7B, Qwen2.5-1.5B), measures adadecode's pass-cost curves (1..8 rows) and
# llama-bench on the same files, prices the committed CPU decoding traces with each curve, and leaves everything
# in $OUT (gpu_scale.json, gpu_scale.md, run.log, results.tar.gz).
#
#   bash bench/gpu_scale/run_gpu.sh [--cpu] [--layers N] [--models "MODEL:QUANT ..."] [--reps N] [--rows N]
#                                   [--budget SECONDS] [--decode TOKENS] [--no-llama]
#
# Resumable: every step keeps its result under $WORK (default .gpu_work in the repository, ignored by git, kept
# between calls while the machine stays warm) and is skipped when it is there, so a second call with the same
# command finishes what the first one's --budget left (a device call runs 10 minutes at most).
# --cpu: the dry run the tests use (tests/test_gpu_scale.py): no builds, the installed adadecode on ggml's CPU
# device, no llama-bench; with --layers 2 it runs in a minute on a laptop.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
MODE=gpu
LAYERS=""
MODELS="llama-3.1-8b:q4_k_m qwen2.5-7b:q4_k_m qwen2.5-1.5b:q4_k_m llama-3.1-8b:q8_0"
REPS=10
ROWS=8
BUDGET=560
DECODE=128
LLAMA=1
while [ $# -gt 0 ]; do
    case "$1" in
    --cpu) MODE=cpu ;;
    --layers) LAYERS=$2; shift ;;
    --models) MODELS=$2; shift ;;
    --reps) REPS=$2; shift ;;
    --rows) ROWS=$2; shift ;;
    --budget) BUDGET=$2; shift ;;
    --decode) DECODE=$2; shift ;;
    --no-llama) LLAMA=0 ;;
    -h | --help) sed -n 2,16p "$0"; exit 0 ;;
    *) echo "run_gpu.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
for n in "$REPS" "$ROWS" "$BUDGET" "$DECODE" ${LAYERS:+"$LAYERS"}; do
    [[ "$n" =~ ^[1-9][0-9]*$ ]] || { echo "run_gpu.sh: '$n' is not a positive integer" >&2; exit 2; }
done

OUT=${OUT:-$ROOT/gpu_scale_out}
WORK=${WORK:-$ROOT/.gpu_work}
SRC_TAR=${SRC_TAR:-$ROOT/.gpu_carry/llama.cpp-src.tar.gz}
PYTHON=${PYTHON:-python3}
JOBS=${JOBS:-$(nproc)}
mkdir -p "$OUT" "$WORK/results" "$WORK/models"
LOG="$WORK/results/run.log"
START=$(date +%s)
log() { echo "[$(($(date +%s) - START))s] $*" | tee -a "$LOG" >&2; }
left() { echo $((BUDGET - ($(date +%s) - START))); }
export PYTHONUNBUFFERED=1

finish() {
    # What comes back: at most 8 files. Everything of this and earlier calls, bundled.
    "$PYTHON" "$ROOT/bench/gpu_scale/collect.py" "$WORK/results" "$OUT" --mode "$MODE" >>"$LOG" 2>&1 ||
        log "collect.py failed"
    cp "$LOG" "$OUT/run.log"
    tar -czf "$OUT/results.tar.gz" -C "$WORK" results 2>/dev/null
}
trap finish EXIT

log "mode $MODE, models: $MODELS${LAYERS:+, $LAYERS layers}, budget ${BUDGET}s, work $WORK"
{
    date -u +%FT%TZ
    uname -a
    nproc
    if [ "$MODE" = gpu ]; then
        nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>&1 | head -3
        nvcc --version 2>&1 | tail -1
    fi
    "$PYTHON" --version
} >"$WORK/results/env.txt" 2>&1

# --- sources and builds ---------------------------------------------------------------------------------------
TREE=""
BUILD_PIDS=()
if [ "$MODE" = gpu ]; then
    if [ ! -f "$WORK/src/llama.cpp/CMakeLists.txt" ]; then
        [ -f "$SRC_TAR" ] || { log "no $SRC_TAR: run bench/gpu_scale/pack_sources.sh here and carry .gpu_carry"; exit 2; }
        mkdir -p "$WORK/src" && tar -xzf "$SRC_TAR" -C "$WORK/src" || exit 2
    fi
    TREE="$WORK/src/llama.cpp"
    export PYTHONPATH="$WORK/pkg:$TREE/gguf-py${PYTHONPATH:+:$PYTHONPATH}"
    if ! ls "$WORK"/build-cuda/_core*.so >/dev/null 2>&1; then
        log "building adadecode with CUDA (ggml of the carried tree; FlashAttention kernels off: adadecode has no use for them)"
        (
            cmake -S "$ROOT" -B "$WORK/build-cuda" -G Ninja -DCMAKE_BUILD_TYPE=Release \
                -DADADECODE_GGML_SOURCE_DIR="$TREE/ggml" -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
                -DGGML_CUDA_FA=OFF -DADADECODE_BUILD_PYTHON=ON -DADADECODE_BUILD_TESTS=OFF \
                -DPython_EXECUTABLE="$(command -v "$PYTHON")" \
                -Dpybind11_DIR="$("$PYTHON" -m pybind11 --cmakedir)" &&
                cmake --build "$WORK/build-cuda" -j "$JOBS" --target _core adadecode-microbench
        ) >"$WORK/results/build-adadecode.log" 2>&1 &
        BUILD_PIDS+=($!)
    fi
    if [ "$LLAMA" = 1 ] && [ ! -x "$WORK/build-llama/bin/llama-bench" ]; then
        # FlashAttention off here too: adadecode never uses it, so both engines run the same attention (and its 82
        # of ggml-cuda's 121 template instances would double the build's time on a lease counted in minutes).
        log "building llama.cpp's llama-bench with CUDA (FlashAttention kernels off, as in adadecode's build)"
        (
            cmake -S "$TREE" -B "$WORK/build-llama" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_CUDA=ON \
                -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
                -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF \
                -DBUILD_SHARED_LIBS=OFF &&
                cmake --build "$WORK/build-llama" -j "$JOBS" --target llama-bench
        ) >"$WORK/results/build-llama.log" 2>&1 &
        BUILD_PIDS+=($!)
    fi
fi

# --- synthetic models, written while the builds run -------------------------------------------------------------
synth() {
    for spec in $MODELS; do
        local model=${spec%%:*} quant=${spec#*:}
        local file="$WORK/models/$model-$quant${LAYERS:+-${LAYERS}l}.gguf"
        [ -f "$file" ] && continue
        "$PYTHON" "$ROOT/bench/synth_gguf.py" "$model" "$quant" -o "$file" -q ${LAYERS:+--layers "$LAYERS"} ||
            echo "synth $spec failed"
    done
}
synth >"$WORK/results/synth.log" 2>&1 &
SYNTH_PID=$!

for pid in "${BUILD_PIDS[@]}"; do
    wait "$pid" || log "a build failed (rc $?): see build-*.log in results.tar.gz"
done
if [ "$MODE" = gpu ] && ls "$WORK"/build-cuda/_core*.so >/dev/null 2>&1; then
    mkdir -p "$WORK/pkg/adadecode"
    for f in "$ROOT"/python/adadecode/*; do ln -sfn "$f" "$WORK/pkg/adadecode/"; done
    ln -sfn "$WORK"/build-cuda/_core*.so "$WORK/pkg/adadecode/"
    # ggml's shared libraries built beside the extension
    export LD_LIBRARY_PATH="$WORK/build-cuda/ggml-build/src:$WORK/build-cuda/ggml-build/src/ggml-cuda${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
wait "$SYNTH_PID"
log "synthetic models: $(cd "$WORK/models" && ls -s --block-size=M *.gguf 2>/dev/null | tr '\n' ' ')"
cat "$WORK/results/synth.log" >>"$LOG"

HAVE_ADADECODE=1
if ! "$PYTHON" -c "import adadecode" 2>>"$LOG"; then
    log "adadecode does not import: no curves (see build-adadecode.log)"
    HAVE_ADADECODE=0
fi
DEVICE=gpu
[ "$MODE" = cpu ] && DEVICE=CPU

# --- pass-cost curves, then llama-bench, model by model ------------------------------------------------------------
for spec in $MODELS; do
    [ "$HAVE_ADADECODE" = 1 ] || break
    model=${spec%%:*} quant=${spec#*:}
    name="$model-$quant${LAYERS:+-${LAYERS}l}"
    file="$WORK/models/$name.gguf"
    [ -f "$file" ] || { log "$name: no model file (see synth.log)"; continue; }
    curve="$WORK/results/curve-$name.json"
    if [ ! -f "$curve" ]; then
        if [ "$(left)" -lt 60 ]; then log "$name: curve left for the next call (budget)"; continue; fi
        log "$name: pass-cost curve"
        "$PYTHON" "$ROOT/bench/replay_sim.py" curve -m "$file" --synthetic-heads --device "$DEVICE" -t "$JOBS" \
            --n-ctx 512 --position 200 --max-rows "$ROWS" --reps "$REPS" --decode-tokens "$DECODE" -o "$curve" \
            >>"$LOG" 2>&1 || log "$name: curve failed"
        rm -f "$WORK/results/curve-$name.heads.gguf"
    fi
done
if [ "$MODE" = gpu ] && [ "$LLAMA" = 1 ] && [ -x "$WORK/build-llama/bin/llama-bench" ]; then
    for spec in $MODELS; do
        name="${spec%%:*}-${spec#*:}${LAYERS:+-${LAYERS}l}"
        out="$WORK/results/llama-bench-$name.json"
        [ -f "$out" ] || [ ! -f "$WORK/models/$name.gguf" ] && continue
        if [ "$(left)" -lt 60 ]; then log "$name: llama-bench left for the next call (budget)"; continue; fi
        log "$name: llama-bench (tg128; prompt batches of 1, 2, 4, 8 tokens = passes over that many rows)"
        "$WORK/build-llama/bin/llama-bench" -m "$WORK/models/$name.gguf" -ngl 99 -fa off -p 1,2,4,8 -n 128 -r 5 -o json \
            >"$out.tmp" 2>>"$LOG" && mv "$out.tmp" "$out" || log "$name: llama-bench failed"
    done
elif [ "$MODE" = gpu ] && [ "$LLAMA" = 1 ]; then
    log "no llama-bench binary (see build-llama.log)"
fi

# --- the committed CPU traces, priced with every curve ---------------------------------------------------------
curves=("$WORK"/results/curve-*.json)
if [ "$HAVE_ADADECODE" = 1 ] && [ -f "${curves[0]}" ]; then
    for traces in "$ROOT"/bench/results/gpu_scale/traces-*.json; do
        [ -f "$traces" ] || continue
        stem=$(basename "$traces" .json)
        "$PYTHON" "$ROOT/bench/replay_sim.py" price "$traces" "${curves[@]}" -o "$WORK/results/price-${stem#traces-}.json" \
            >"$WORK/results/price-${stem#traces-}.md" 2>>"$LOG" || log "pricing $stem failed"
    done
fi
[ "$HAVE_ADADECODE" = 1 ] || exit 1
log "done"
