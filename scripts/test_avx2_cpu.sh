#!/usr/bin/env bash
# The engine on an AVX2-only x86 CPU, tested on any x86-64 machine: runs our binaries under qemu-x86_64 emulating an
# AMD EPYC Zen 3 (`-cpu EPYC-Milan`: AVX2, FMA, F16C, no AVX-512). qemu's emulator has no AVX-512 at all, so a single
# AVX-512 instruction reached on this path ends the run with SIGILL: this proves the run-time dispatch keeps an
# AVX2-only CPU (most laptops, Zen 3 and older) on AVX2 code, which a machine with AVX-512 cannot show natively.
#   1. test_qmatmul with the default family: it must pick avx2, pass its accuracy and batch-invariance checks and
#      match the x86 output checksums (tests/cpp/qmatmul_x86_checksums.txt) bit for bit.
#   2. test_attention: it must run the AVX2 attention kernel and pass its checks (accuracy, masking, batch
#      invariance, the x86 output checksums in tests/cpp/attention_x86_checksums.txt; natively on AVX-512 the same
#      test checks the AVX2 kernel bitwise against the AVX-512 one).
#   3. adadecode-cli, greedy on SmolLM2 with the shipped exit heads, in standard and adadecode+ngram modes: the
#      tokens under qemu (AVX2 kernels) must equal the tokens of the same binary run natively (on an AVX-512 host,
#      the AVX-512 kernels), which is the families' bitwise equality seen through a whole decode.
# Emulation says nothing about speed. Needs qemu-user (Debian's package name) and a C++ build with the CLI.
#
#   scripts/test_avx2_cpu.sh [BUILD_DIR]    BUILD_DIR holds test_qmatmul and adadecode-cli (default build-ci);
#                                           needs $ADADECODE_CACHE/models/smollm2-135m.gguf (adadecode fetch)
#   N_PREDICT=24                            tokens per decode (default 24)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build-ci}
cache=${ADADECODE_CACHE:-$HOME/.cache/adadecode}
n_predict=${N_PREDICT:-24}
cpu=EPYC-Milan
heads="$root/python/adadecode/heads/smollm2-135m.heads.gguf"

if [ "$(uname -m)" != x86_64 ]; then
    echo "test_avx2_cpu.sh: runs on x86-64 hosts only (this is $(uname -m))" >&2
    exit 2
fi
command -v qemu-x86_64 >/dev/null || {
    echo "test_avx2_cpu.sh: qemu-x86_64 is missing; install with: sudo apt-get install qemu-user" >&2
    exit 2
}
for f in "$build/test_qmatmul" "$build/test_attention" "$build/adadecode-cli" "$cache/models/smollm2-135m.gguf" "$heads"; do
    [ -e "$f" ] || {
        echo "test_avx2_cpu.sh: $f is missing (build with cmake into $build; adadecode fetch smollm2-135m)" >&2
        exit 2
    }
done

# qemu warns once per CPU feature its emulator lacks (pcid, sha-ni, ...); none of them is one our code uses.
emulated() { qemu-x86_64 -cpu "$cpu" "$@" 2> >(grep -v "TCG doesn't support requested feature" >&2); }

failures=0
pass() { echo "PASS  $*"; }
fail() {
    echo "FAIL  $*"
    failures=$((failures + 1))
}

t0=$(date +%s)
log=$(mktemp)
if emulated "$build/test_qmatmul" >"$log" 2>&1 && grep -q "^family avx2:" "$log"; then
    pass "-cpu $cpu test_qmatmul -> $(grep '^family avx2:' "$log") ($(($(date +%s) - t0)) s)"
else
    cat "$log"
    fail "-cpu $cpu test_qmatmul (expected the avx2 family, every check passing)"
fi
t0=$(date +%s)
if emulated "$build/test_attention" >"$log" 2>&1 && grep -q "kernel avx2" "$log" && grep -q "test_attention: ok" "$log"; then
    pass "-cpu $cpu test_attention -> the AVX2 kernel, every check passing ($(($(date +%s) - t0)) s)"
else
    cat "$log"
    fail "-cpu $cpu test_attention (expected the AVX2 kernel, every check passing)"
fi
rm -f "$log"

tokens() { python3 -c 'import json, sys; print(json.load(sys.stdin)["tokens"])'; }
for mode in standard adadecode+ngram; do
    args=(-m "$cache/models/smollm2-135m.gguf" -p "def fibonacci(n):" -n "$n_predict" -t 2 --json --mode "$mode")
    [ "$mode" = standard ] || args+=(--heads "$heads")
    t0=$(date +%s)
    native=$("$build/adadecode-cli" "${args[@]}" | tokens)
    if under_qemu=$(emulated "$build/adadecode-cli" "${args[@]}" | tokens) && [ "$native" = "$under_qemu" ]; then
        pass "-cpu $cpu adadecode-cli --mode $mode: $n_predict tokens equal to the native run ($(($(date +%s) - t0)) s)"
    else
        echo "native:     $native"
        echo "under qemu: ${under_qemu:-}"
        fail "-cpu $cpu adadecode-cli --mode $mode: tokens differ from the native run"
    fi
done

if [ $failures -gt 0 ]; then
    echo "test_avx2_cpu.sh: $failures run(s) FAILED" >&2
    exit 1
fi
echo "test_avx2_cpu.sh: all runs passed"
