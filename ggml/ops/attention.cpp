#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace adadecode {

#if defined(__x86_64__) || defined(_M_X64)

namespace {

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")

constexpr int max_head_dim = 256;

// e^x for x <= 0 (x - max of a softmax row), -inf included: 2^n e^r with n = round(x / ln 2) and |r| <= ln 2 / 2,
// e^r by its Taylor polynomial to degree 7 (relative error below 3e-8 there). From -104 down the result is exactly
// 0, as a masked position's must be.
inline __m512 exp_nonpositive(__m512 x) {
    const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(-104.0f), _CMP_GT_OQ);
    x = _mm512_max_ps(x, _mm512_set1_ps(-104.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    // ln 2 in two parts, the first exact in few bits, so that n ln 2 is subtracted without rounding error.
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_maskz_mov_ps(live, _mm512_scalef_ps(p, n));
}

inline __m512 load_f16(const ggml_fp16_t *p) {
    return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(p)));
}

// The first `count` (< 16) values, zeros after.
inline __m512 load_f16_partial(const ggml_fp16_t *p, int count) {
    const __mmask16 m = static_cast<__mmask16>((1u << count) - 1);
    return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

inline __m512 round_to_f16(__m512 x) {
    return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// One query head of one row: scores against the n_kv keys, softmax, weighted sum of the values.
void attend_one(const float *query, const ggml_fp16_t *keys, size_t key_stride, const ggml_fp16_t *values,
                size_t value_stride, const float *mask, int64_t n_kv, int head_dim, float *probs, float *out) {
    const int chunks = head_dim / 16;
    __m512 q[max_head_dim / 16];
    for (int c = 0; c < chunks; ++c) q[c] = round_to_f16(_mm512_loadu_ps(query + 16 * c));
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    const float neg_inf = -std::numeric_limits<float>::infinity();
    float max_score = neg_inf;
    int64_t live_end = 0;  // one past the last position the mask lets through
    for (int64_t j = 0; j < n_kv; ++j) {
        if (mask[j] == neg_inf) {
            probs[j] = neg_inf;
            continue;
        }
        live_end = j + 1;
        const ggml_fp16_t *key = keys + j * key_stride;
        __m512 acc = _mm512_mul_ps(load_f16(key), q[0]);
        for (int c = 1; c < chunks; ++c) acc = _mm512_fmadd_ps(load_f16(key + 16 * c), q[c], acc);
        const float score = _mm512_reduce_add_ps(acc) * scale + mask[j];
        probs[j] = score;
        if (score > max_score)
            max_score = score;
    }
    if (max_score == neg_inf) {  // every position masked: nothing to attend to
        std::memset(out, 0, sizeof(float) * head_dim);
        return;
    }
    // Past the last live position every probability is exactly 0 and adds nothing to a sum: the loops below stop
    // at the 16-position chunk that holds it (whole chunks, so each lane sums the same terms in the same order).
    // A causal prompt pass (every row's mask ends at its own position) so does about half the work on the values,
    // and a row computes the same whether the pass's keys reach beyond its position or not.
    n_kv = std::min(n_kv, (live_end + 15) / 16 * 16);
    const int64_t full = n_kv / 16 * 16;
    const __m512 max_v = _mm512_set1_ps(max_score);
    __m512 sum_v = _mm512_setzero_ps();
    for (int64_t j = 0; j < full; j += 16) {
        const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(probs + j), max_v));
        _mm512_storeu_ps(probs + j, e);
        sum_v = _mm512_add_ps(sum_v, e);
    }
    const __mmask16 tail = static_cast<__mmask16>((1u << (n_kv - full)) - 1);
    if (tail) {
        const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, probs + full), max_v));
        _mm512_mask_storeu_ps(probs + full, tail, e);
        sum_v = _mm512_add_ps(sum_v, _mm512_maskz_mov_ps(tail, e));
    }
    const __m512 inv_sum = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum_v));
    for (int64_t j = 0; j < full; j += 16)
        _mm512_storeu_ps(probs + j, round_to_f16(_mm512_mul_ps(_mm512_loadu_ps(probs + j), inv_sum)));
    if (tail) {
        _mm512_mask_storeu_ps(probs + full, tail,
                              round_to_f16(_mm512_mul_ps(_mm512_maskz_loadu_ps(tail, probs + full), inv_sum)));
    }
    for (int d = 0; d < head_dim; ++d) {
        const ggml_fp16_t *value = values + d * value_stride;
        __m512 acc = _mm512_setzero_ps();
        for (int64_t j = 0; j < full; j += 16)
            acc = _mm512_fmadd_ps(load_f16(value + j), _mm512_loadu_ps(probs + j), acc);
        if (tail) {
            acc = _mm512_fmadd_ps(load_f16_partial(value + full, static_cast<int>(n_kv - full)),
                                  _mm512_maskz_loadu_ps(tail, probs + full), acc);
        }
        out[d] = _mm512_reduce_add_ps(acc);
    }
}

// src: the queries, the K cache, the V cache, the mask. Work is split by (row, query head), whole units per thread.
void compute(ggml_tensor *dst, int ith, int nth, void *) {
    const ggml_tensor *q = dst->src[0], *k = dst->src[1], *v = dst->src[2], *mask = dst->src[3];
    const int head_dim = static_cast<int>(q->ne[0]);
    const int64_t n_head = q->ne[1], n_rows = q->ne[2], n_kv = mask->ne[0];
    const int64_t group = n_head / (k->ne[0] / head_dim);  // query heads per kv head
    const int64_t units = n_rows * n_head;
    const int64_t per_thread = (units + nth - 1) / nth;
    const int64_t first = std::min(units, per_thread * ith), last = std::min(units, first + per_thread);
    thread_local std::vector<float> probs;
    probs.resize(static_cast<size_t>(n_kv));
    const char *q_data = static_cast<const char *>(q->data);
    const char *mask_data = static_cast<const char *>(mask->data);
    char *out_data = static_cast<char *>(dst->data);
    for (int64_t unit = first; unit < last; ++unit) {
        const int64_t row = unit / n_head, head = unit % n_head, kv_head = head / group;
        const float *query = reinterpret_cast<const float *>(q_data + row * q->nb[2] + head * q->nb[1]);
        const ggml_fp16_t *keys = static_cast<const ggml_fp16_t *>(k->data) + kv_head * head_dim;
        const ggml_fp16_t *values =
            reinterpret_cast<const ggml_fp16_t *>(static_cast<const char *>(v->data) + kv_head * head_dim * v->nb[1]);
        float *out = reinterpret_cast<float *>(out_data + row * dst->nb[1]) + head * head_dim;
        attend_one(query, keys, k->nb[1] / sizeof(ggml_fp16_t), values, v->nb[1] / sizeof(ggml_fp16_t),
                   reinterpret_cast<const float *>(mask_data + row * mask->nb[1]), n_kv, head_dim, probs.data(), out);
    }
}

#pragma GCC pop_options

}  // namespace

bool cpu_attention_supported(int head_dim) {
    static const bool enabled = [] {
        const char *env = std::getenv("ADADECODE_ATTENTION");
        if (env && (std::string(env) == "0" || std::string(env) == "off"))
            return false;
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("f16c") && __builtin_cpu_supports("fma");
    }();
    return enabled && head_dim % 16 == 0 && head_dim > 0 && head_dim <= max_head_dim;
}

ggml_tensor *cpu_attention(ggml_context *ctx, ggml_tensor *q, ggml_tensor *k_cache, ggml_tensor *v_cache,
                           ggml_tensor *mask) {
    ggml_tensor *args[4] = {q, k_cache, v_cache, mask};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0] * q->ne[1], q->ne[2], 1, 1, args, 4, compute, GGML_N_TASKS_MAX,
                          nullptr);
}

#else  // not x86-64: ggml's path everywhere

bool cpu_attention_supported(int) {
    return false;
}

ggml_tensor *cpu_attention(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, ggml_tensor *) {
    return nullptr;
}

#endif

}  // namespace adadecode
