// Attention over a layer's F16 KV cache for the rows of a pass, as a ggml custom op on the CPU.
//
// Why: ggml's path (mul_mat of the keys by the queries, soft_max, mul_mat of the values by the probabilities) makes
// one call of a 128-value dot product per (key, query) pair, and three graph nodes. On the 1.5B at position 400 this
// op took the one-row pass from 22.7 to 20.9 ms. The x86 kernels take the (row, query head) pairs that share a KV
// head together and convert its F16 keys and values once for all of them (the conversion ran at half the rate of
// the multiply-adds): at 1,000 positions, 8 rows of a 1.5B layer went from 650 to 327 us (2 threads, Zen 4;
// bench/results/roofline/attention-runs-2026-12-06).
//
// Numerics follow ggml's path: the query is rounded to F16 before its products with the keys (as ggml converts it
// to the keys' type) and so are the probabilities before their products with the values; products and sums are F32.
// Exactness: each (row, query head) is computed by one thread with the same operations whatever the number of rows
// or threads, so a row's result is bitwise independent of the batch it travels in, as layer-parallel decoding needs.
#pragma once

#include "ggml.h"

namespace adadecode {

// True when this CPU runs a kernel (AVX-512, AVX2 with FMA and F16C, or on aarch64 NEON) for heads of `head_dim` values
// (a multiple of 16, at most 256) and ADADECODE_ATTENTION is not 0 in the environment (0 keeps ggml's path, to
// measure one against the other; avx2 picks the AVX2 kernel on any x86 CPU). All kernels give bitwise the same
// results, so that attention is never what makes a model's output differ between two machines.
bool cpu_attention_supported(int head_dim);

// The kernel cpu_attention runs here: "avx512", "avx2", "neon" or "off".
const char *cpu_attention_family();

// q [head_dim, n_head, n_rows] f32, contiguous (the queries after RoPE); k_cache [n_embd_kv, n_alloc] f16, one row
// per position; v_cache [n_alloc, n_embd_kv] f16, transposed: one row per (kv head, dimension); mask [n_kv, n_rows]
// f32, 0 or -inf, over the first n_kv positions. Query head h reads kv head h / (n_head / n_head_kv).
// Returns [head_dim * n_head, n_rows] f32: per row and head, softmax(q k^T / sqrt(head_dim) + mask) v.
ggml_tensor *cpu_attention(ggml_context *ctx, ggml_tensor *q, ggml_tensor *k_cache, ggml_tensor *v_cache,
                           ggml_tensor *mask);

// cpu_attention with the AVX2 kernel whatever the x86 CPU has (for tests: its results against the AVX-512 kernel's);
// nullptr off x86.
ggml_tensor *cpu_attention_avx2(ggml_context *ctx, ggml_tensor *q, ggml_tensor *k_cache, ggml_tensor *v_cache,
                                ggml_tensor *mask);

}  // namespace adadecode
