#!/usr/bin/env bash
# The ARM (aarch64) kernels, tested on an x86 machine: cross-builds ggml's CPU backend, our ops and the kernel tests
# (tests/cpp/test_qmatmul.cpp, tests/cpp/test_attention.cpp) for plain ARMv8-A into build-arm/, then runs them under
# qemu-aarch64 on two emulated CPUs, each with every kernel family it can run:
#   -cpu max         has the ARMv8.2 dot product: matmul default (must pick neondot), ADADECODE_QMATMUL=neondot, =neon;
#                    attention default (must pick neon), ADADECODE_ATTENTION=0 (must keep ggml's path)
#   -cpu cortex-a57  has not:                     matmul default (must pick neon), ADADECODE_QMATMUL=neon;
#                    attention default (must pick neon)
# Each run checks accuracy, bitwise batch invariance (1-3 threads, any batch) and bitwise equality with the x86
# kernels (checksums in tests/cpp/qmatmul_x86_checksums.txt, tests/cpp/attention_x86_checksums.txt). Any failure
# ends the script with a non-zero status.
# Emulation says nothing about speed. Needs: cmake, g++-aarch64-linux-gnu, qemu-user (Debian/Ubuntu package names).
#
#   scripts/test_arm.sh                 build (incremental) and run the kernel test
#   scripts/test_arm.sh --model         also the forward pass's batch invariance on SmolLM2 (test_batch_invariance,
#                                       -cpu max, the model's weights packed for the NEON kernels; ~5 more minutes;
#                                       needs $ADADECODE_CACHE/models/smollm2-135m.gguf: adadecode fetch smollm2-135m)
#   JOBS=4 scripts/test_arm.sh          parallel build jobs (default 2)
#   ADADECODE_GGML_SOURCE_DIR=/path     a ggml source tree of the version we link (default: the pinned
#                                       libggml-python sdist that ggml/rpc.cmake names, downloaded once from PyPI
#                                       into $ADADECODE_CACHE/ggml-src, SHA-256 checked)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
with_model=0
for arg in "$@"; do
    case $arg in
        --model) with_model=1 ;;
        *)
            echo "test_arm.sh: unknown argument '$arg' (usage: scripts/test_arm.sh [--model])" >&2
            exit 2
            ;;
    esac
done
cache=${ADADECODE_CACHE:-$HOME/.cache/adadecode}
if [ $with_model = 1 ] && [ ! -f "$cache/models/smollm2-135m.gguf" ]; then
    echo "test_arm.sh: --model needs $cache/models/smollm2-135m.gguf (adadecode fetch smollm2-135m)" >&2
    exit 2
fi
build="$root/build-arm"
jobs=${JOBS:-2}
sysroot=/usr/aarch64-linux-gnu

missing=()
command -v cmake >/dev/null || missing+=(cmake)
command -v aarch64-linux-gnu-g++ >/dev/null || missing+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
[ -e "$sysroot/lib/ld-linux-aarch64.so.1" ] || missing+=(libc6-dev-arm64-cross)
if [ ${#missing[@]} -gt 0 ]; then
    echo "test_arm.sh: missing ${missing[*]}; install with:" >&2
    echo "    sudo apt-get install ${missing[*]}" >&2
    exit 2
fi

# ggml's source, of the version the x86 build links (0.20.2, from the same sdist as the RPC backend).
sdist=libggml_python-0.20.2.post1
ggml_src=${ADADECODE_GGML_SOURCE_DIR:-}
cached=$(sed -n 's/^ADADECODE_GGML_SOURCE_DIR:PATH=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
if [ -n "$cached" ] && [ -n "$ggml_src" ] && [ "$cached" != "$ggml_src" ]; then
    rm -rf "$build"  # ggml's targets cannot move to another source tree in an existing build directory
elif [ -z "$ggml_src" ] && [ -f "$cached/src/ggml-cpu/ggml-cpu.c" ]; then
    ggml_src=$cached
fi
# Kept outside the repository: ggml's CMake stamps ggml-base with the commit of the git tree around its source, which
# would rebuild it after every commit of ours. (The x86 build's rpc-src holds only the RPC backend's part of the
# sdist, not a tree to build ggml from.)
src_dir="$cache/ggml-src"
if [ -z "$ggml_src" ] && [ -f "$src_dir/$sdist/ggml/src/ggml-cpu/ggml-cpu.c" ]; then
    ggml_src="$src_dir/$sdist/ggml"
fi
if [ -z "$ggml_src" ]; then
    url=$(sed -n '/set(ADADECODE_RPC_SDIST_URL\|string(CONCAT ADADECODE_RPC_SDIST_URL/,/)/p' "$root/ggml/rpc.cmake" |
          grep -o '"[^"]*"' | tr -d '"\n')
    sha=$(sed -n 's/.*ADADECODE_RPC_SDIST_SHA256 "\([0-9a-f]*\)".*/\1/p' "$root/ggml/rpc.cmake")
    if [ -z "$url" ] || [ -z "$sha" ]; then
        echo "test_arm.sh: cannot read the ggml sdist's address from ggml/rpc.cmake" >&2
        exit 1
    fi
    mkdir -p "$src_dir"
    echo "test_arm.sh: downloading $url"
    python3 -c 'import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])' \
        "$url" "$src_dir/$sdist.tar.gz"
    echo "$sha  $src_dir/$sdist.tar.gz" | sha256sum -c --quiet - || {
        echo "test_arm.sh: SHA-256 mismatch for $src_dir/$sdist.tar.gz" >&2
        exit 1
    }
    tar -xzf "$src_dir/$sdist.tar.gz" -C "$src_dir"
    rm "$src_dir/$sdist.tar.gz"
    ggml_src="$src_dir/$sdist/ggml"
fi

start=$(date +%s)
mkdir -p "$build"
# Plain ARMv8-A for ggml too (GGML_NATIVE would ask the x86 host), so that every binary runs on the CPU without the
# dot product. Only what the test links: no Python, CLI, RPC backend or llamafile kernels.
cmake -S "$root" -B "$build" -DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-linux-gnu.cmake" \
    -DCMAKE_BUILD_TYPE=Release -DADADECODE_GGML_SOURCE_DIR="$ggml_src" -DADADECODE_RPC=OFF \
    -DADADECODE_BUILD_CLI=OFF -DGGML_NATIVE=OFF -DGGML_CPU_ARM_ARCH=armv8-a -DGGML_LLAMAFILE=OFF \
    >"$build/configure.log" 2>&1 || {
    cat "$build/configure.log" >&2
    echo "test_arm.sh: configuring the cross build failed" >&2
    exit 1
}
targets=(test_qmatmul test_attention)
[ $with_model = 0 ] || targets+=(test_batch_invariance)
cmake --build "$build" -j "$jobs" --target "${targets[@]}"
built=$(date +%s)

failures=0
# run TEST CPU SETTING LINE: TEST under qemu on CPU with the environment SETTING (NAME=VALUE; NAME= is the default),
# which must succeed and print LINE (the kernel family it ran, or that it kept ggml's path).
run() {
    local test=$1 cpu=$2 setting=$3 line=$4 log
    log=$(mktemp)
    local t0=$(date +%s)
    if env "$setting" qemu-aarch64 -cpu "$cpu" -L "$sysroot" "$build/$test" >"$log" 2>&1 &&
        grep -q "^$line" "$log"; then
        echo "PASS  $test -cpu $cpu $setting -> $(grep -m1 "^$line" "$log") ($(($(date +%s) - t0)) s)"
    else
        cat "$log"
        echo "FAIL  $test -cpu $cpu $setting (expected: $line)"
        failures=$((failures + 1))
    fi
    rm -f "$log"
}
run test_qmatmul max ADADECODE_QMATMUL= "family neondot:"
run test_qmatmul max ADADECODE_QMATMUL=neondot "family neondot:"
run test_qmatmul max ADADECODE_QMATMUL=neon "family neon:"
run test_qmatmul cortex-a57 ADADECODE_QMATMUL= "family neon:"
run test_qmatmul cortex-a57 ADADECODE_QMATMUL=neon "family neon:"
run test_attention max ADADECODE_ATTENTION= "kernel neon: [1-9][0-9]* output checksums compared"
run test_attention max ADADECODE_ATTENTION=0 "test_attention: the CPU attention op is not available here"
run test_attention cortex-a57 ADADECODE_ATTENTION= "kernel neon: [1-9][0-9]* output checksums compared"
if [ $with_model = 1 ]; then
    t0=$(date +%s)
    if ADADECODE_CACHE=$cache qemu-aarch64 -cpu max -L "$sysroot" "$build/test_batch_invariance"; then
        echo "PASS  -cpu max test_batch_invariance ($(($(date +%s) - t0)) s)"
    else
        echo "FAIL  -cpu max test_batch_invariance"
        failures=$((failures + 1))
    fi
fi

echo "test_arm.sh: build $((built - start)) s, tests $(($(date +%s) - built)) s"
if [ $failures -gt 0 ]; then
    echo "test_arm.sh: $failures run(s) FAILED" >&2
    exit 1
fi
echo "test_arm.sh: all runs passed"
