#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <string>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ADADECODE_ATTENTION_X86 1
#include <immintrin.h>
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define ADADECODE_ATTENTION_ARM 1
#include <arm_neon.h>
#endif

namespace adadecode {

#if defined(ADADECODE_ATTENTION_X86) || defined(ADADECODE_ATTENTION_ARM)

namespace {

constexpr int max_head_dim = 256;

// The constants of exp_nonpositive (below), shared by every kernel (x86 and NEON) so that they stay the same: from
// exp_floor down e^x is 0; ln 2 in two parts, the first exact in few bits, so that n ln 2 is subtracted without
// rounding error; the Taylor coefficients of e^r, highest degree first (Horner).
constexpr float exp_floor = -104.0f, log2_e = 1.44269504088896341f, ln2_high = 0.693359375f, ln2_low = -2.12194440e-4f;
constexpr float exp_taylor[] = {1.0f / 5040, 1.0f / 720, 1.0f / 120, 1.0f / 24, 1.0f / 6, 0.5f, 1.0f, 1.0f};

// One query head of one row: scores against the n_kv keys, softmax, weighted sum of the values. Each architecture's
// section below defines its kernels and chosen_kernel() (the kernel for this CPU, nullptr for ggml's path),
// family_of(kernel) (its name) and avx2_kernel() (the AVX2 one, nullptr where there is none).
using AttendOne = void (*)(const float *, const ggml_fp16_t *, size_t, const ggml_fp16_t *, size_t, const float *,
                           int64_t, int, float *, float *);

}  // namespace

#endif

#if defined(ADADECODE_ATTENTION_X86)

namespace {

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

// The sum of 16 floats held as two halves (lanes 0-7, 8-15), in the order GCC's _mm512_reduce_add_ps adds them:
// both kernels end their dot products with it, so that the AVX2 one gives bitwise the AVX-512 one's results.
inline float sum16(__m256 low, __m256 high) {
    const __m256 eight = _mm256_add_ps(high, low);
    const __m128 four = _mm_add_ps(_mm256_extractf128_ps(eight, 1), _mm256_castps256_ps128(eight));
    const __m128 two = _mm_add_ps(four, _mm_shuffle_ps(four, four, _MM_SHUFFLE(1, 0, 3, 2)));
    return _mm_cvtss_f32(two) + _mm_cvtss_f32(_mm_shuffle_ps(two, two, 1));
}

// The AVX2 kernel: the AVX-512 one (below) step for step on 16-lane vectors held as two 8-lane halves, every lane
// doing the same operations in the same order, so that a CPU without AVX-512 computes the same bits.
struct Lanes16 {
    __m256 half[2];
};

inline Lanes16 load16(const float *p) {
    return {{_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}};
}

inline void store16(float *p, const Lanes16 &x) {
    _mm256_storeu_ps(p, x.half[0]);
    _mm256_storeu_ps(p + 8, x.half[1]);
}

inline Lanes16 load16_f16(const ggml_fp16_t *p) {
    return {{_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p))),
             _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p + 8)))}};
}

inline __m256 round_to_f16_avx2(__m256 x) {
    return _mm256_cvtph_ps(_mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// exp_nonpositive (below) on 8 lanes. Its 2^n scaling (vscalef) is one rounding of p 2^n; here p 2^(n + 64) is exact
// (n >= -151, so it stays a normal float) and the multiplication by 2^-64 rounds once, to the same value.
inline __m256 exp_nonpositive_avx2(__m256 x) {
    const __m256 live = _mm256_cmp_ps(x, _mm256_set1_ps(exp_floor), _CMP_GT_OQ);
    x = _mm256_max_ps(x, _mm256_set1_ps(exp_floor));
    const __m256 n =
        _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(log2_e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(ln2_high), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(ln2_low), r);
    __m256 p = _mm256_set1_ps(exp_taylor[0]);
    for (size_t i = 1; i < std::size(exp_taylor); ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(exp_taylor[i]));
    const __m256i biased = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(64 + 127));
    const __m256 two_n_plus_64 = _mm256_castsi256_ps(_mm256_slli_epi32(biased, 23));
    const __m256 scaled = _mm256_mul_ps(_mm256_mul_ps(p, two_n_plus_64), _mm256_set1_ps(0x1p-64f));
    return _mm256_and_ps(scaled, live);
}

inline Lanes16 exp16(const Lanes16 &x) {
    return {{exp_nonpositive_avx2(x.half[0]), exp_nonpositive_avx2(x.half[1])}};
}

// All-ones in the first `count` of 16 lanes (as the AVX-512 kernel's tail mask), zeros after.
inline Lanes16 first_lanes(int count) {
    const __m256i index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return {{_mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(count), index)),
             _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(count - 8), index))}};
}

void attend_one_avx2(const float *query, const ggml_fp16_t *keys, size_t key_stride, const ggml_fp16_t *values,
                     size_t value_stride, const float *mask, int64_t n_kv, int head_dim, float *probs, float *out) {
    const int chunks = head_dim / 16;
    __m256 q[max_head_dim / 8];
    for (int c = 0; c < 2 * chunks; ++c) q[c] = round_to_f16_avx2(_mm256_loadu_ps(query + 8 * c));
    const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
    const float neg_inf = -std::numeric_limits<float>::infinity();
    float max_score = neg_inf;
    int64_t live_end = 0;
    for (int64_t j = 0; j < n_kv; ++j) {
        if (mask[j] == neg_inf) {
            probs[j] = neg_inf;
            continue;
        }
        live_end = j + 1;
        const ggml_fp16_t *key = keys + j * key_stride;
        Lanes16 k = load16_f16(key);
        __m256 acc[2] = {_mm256_mul_ps(k.half[0], q[0]), _mm256_mul_ps(k.half[1], q[1])};
        for (int c = 1; c < chunks; ++c) {
            k = load16_f16(key + 16 * c);
            for (int h = 0; h < 2; ++h) acc[h] = _mm256_fmadd_ps(k.half[h], q[2 * c + h], acc[h]);
        }
        const float score = sum16(acc[0], acc[1]) * scale + mask[j];
        probs[j] = score;
        if (score > max_score)
            max_score = score;
    }
    if (max_score == neg_inf) {
        std::memset(out, 0, sizeof(float) * head_dim);
        return;
    }
    n_kv = std::min(n_kv, (live_end + 15) / 16 * 16);
    const int64_t full = n_kv / 16 * 16;
    const int tail = static_cast<int>(n_kv - full);
    const Lanes16 tail_lanes = first_lanes(tail);
    // The tail's probabilities and values padded with zeros, as the AVX-512 kernel's masked loads read them.
    alignas(32) float tail_probs[16] = {};
    alignas(32) ggml_fp16_t tail_values[16] = {};
    const __m256 max_v = _mm256_set1_ps(max_score);
    __m256 sum_v[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
    for (int64_t j = 0; j < full; j += 16) {
        Lanes16 e = load16(probs + j);
        for (int h = 0; h < 2; ++h) e.half[h] = _mm256_sub_ps(e.half[h], max_v);
        e = exp16(e);
        store16(probs + j, e);
        for (int h = 0; h < 2; ++h) sum_v[h] = _mm256_add_ps(sum_v[h], e.half[h]);
    }
    if (tail) {
        std::memcpy(tail_probs, probs + full, sizeof(float) * tail);
        Lanes16 e = load16(tail_probs);
        for (int h = 0; h < 2; ++h) e.half[h] = _mm256_and_ps(_mm256_sub_ps(e.half[h], max_v), tail_lanes.half[h]);
        e = exp16(e);
        for (int h = 0; h < 2; ++h) {
            e.half[h] = _mm256_and_ps(e.half[h], tail_lanes.half[h]);
            sum_v[h] = _mm256_add_ps(sum_v[h], e.half[h]);
        }
        store16(tail_probs, e);
    }
    const __m256 inv_sum = _mm256_set1_ps(1.0f / sum16(sum_v[0], sum_v[1]));
    for (int64_t j = 0; j < full; j += 16) {
        Lanes16 x = load16(probs + j);
        for (int h = 0; h < 2; ++h) x.half[h] = round_to_f16_avx2(_mm256_mul_ps(x.half[h], inv_sum));
        store16(probs + j, x);
    }
    if (tail) {
        Lanes16 x = load16(tail_probs);
        for (int h = 0; h < 2; ++h) x.half[h] = round_to_f16_avx2(_mm256_mul_ps(x.half[h], inv_sum));
        store16(tail_probs, x);
    }
    for (int d = 0; d < head_dim; ++d) {
        const ggml_fp16_t *value = values + d * value_stride;
        __m256 acc[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int64_t j = 0; j < full; j += 16) {
            const Lanes16 v = load16_f16(value + j), p = load16(probs + j);
            for (int h = 0; h < 2; ++h) acc[h] = _mm256_fmadd_ps(v.half[h], p.half[h], acc[h]);
        }
        if (tail) {
            std::memcpy(tail_values, value + full, sizeof(ggml_fp16_t) * tail);
            const Lanes16 v = load16_f16(tail_values), p = load16(tail_probs);
            for (int h = 0; h < 2; ++h) acc[h] = _mm256_fmadd_ps(v.half[h], p.half[h], acc[h]);
        }
        out[d] = sum16(acc[0], acc[1]);
    }
}

#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")

// e^x for x <= 0 (x - max of a softmax row), -inf included: 2^n e^r with n = round(x / ln 2) and |r| <= ln 2 / 2,
// e^r by its Taylor polynomial to degree 7 (relative error below 3e-8 there). From -104 down the result is exactly
// 0, as a masked position's must be.
inline __m512 exp_nonpositive(__m512 x) {
    const __mmask16 live = _mm512_cmp_ps_mask(x, _mm512_set1_ps(exp_floor), _CMP_GT_OQ);
    x = _mm512_max_ps(x, _mm512_set1_ps(exp_floor));
    const __m512 n =
        _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(log2_e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(ln2_high), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(ln2_low), r);
    __m512 p = _mm512_set1_ps(exp_taylor[0]);
    for (size_t i = 1; i < std::size(exp_taylor); ++i) p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(exp_taylor[i]));
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

inline float sum16_512(__m512 x) {
    return sum16(_mm512_castps512_ps256(x), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)));
}

inline __m512 round_to_f16(__m512 x) {
    return _mm512_cvtph_ps(_mm512_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

// One query head of one row: scores against the n_kv keys, softmax, weighted sum of the values.
void attend_one_avx512(const float *query, const ggml_fp16_t *keys, size_t key_stride, const ggml_fp16_t *values,
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
        const float score = sum16_512(acc) * scale + mask[j];
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
    const __m512 inv_sum = _mm512_set1_ps(1.0f / sum16_512(sum_v));
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
        out[d] = sum16_512(acc);
    }
}

#pragma GCC pop_options

// The kernel for this CPU: AVX-512 where it has it, else AVX2 (bitwise the same results); ADADECODE_ATTENTION=0
// keeps ggml's path, =avx2 the AVX2 kernel on any CPU (to measure what an AVX2-only CPU runs), =avx512 the default.
AttendOne chosen_kernel() {
    static const AttendOne kernel = []() -> AttendOne {
        const char *env = std::getenv("ADADECODE_ATTENTION");
        const std::string wanted = env ? env : "";
        if (wanted == "0" || wanted == "off")
            return nullptr;
        __builtin_cpu_init();
        if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !__builtin_cpu_supports("f16c"))
            return nullptr;
        const bool has_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512vl");
        if (!wanted.empty() && wanted != "avx2" && wanted != "avx512") {
            std::fprintf(stderr,
                         "adadecode: ADADECODE_ATTENTION=%s is not one of 0, off, avx2, avx512; using the "
                         "CPU's best kernel\n",
                         wanted.c_str());
        } else if (wanted == "avx512" && !has_avx512) {
            std::fprintf(stderr, "adadecode: ADADECODE_ATTENTION=avx512, but this CPU has no AVX-512; using AVX2\n");
        }
        return has_avx512 && wanted != "avx2" ? attend_one_avx512 : attend_one_avx2;
    }();
    return kernel;
}

const char *family_of(AttendOne kernel) {
    return kernel == attend_one_avx512 ? "avx512" : kernel == attend_one_avx2 ? "avx2" : "off";
}

AttendOne avx2_kernel() {
    return attend_one_avx2;
}

}  // namespace

#elif defined(ADADECODE_ATTENTION_ARM)

#include "attention_neon.inc"

#endif

#if defined(ADADECODE_ATTENTION_X86) || defined(ADADECODE_ATTENTION_ARM)

namespace {

// src: the queries, the K cache, the V cache, the mask; userdata: the kernel (an AttendOne). Work is split by
// (row, query head), whole units per thread.
void compute(ggml_tensor *dst, int ith, int nth, void *kernel) {
    const AttendOne attend = reinterpret_cast<AttendOne>(kernel);
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
        attend(query, keys, k->nb[1] / sizeof(ggml_fp16_t), values, v->nb[1] / sizeof(ggml_fp16_t),
               reinterpret_cast<const float *>(mask_data + row * mask->nb[1]), n_kv, head_dim, probs.data(), out);
    }
}

ggml_tensor *attention_op(ggml_context *ctx, ggml_tensor *q, ggml_tensor *k_cache, ggml_tensor *v_cache,
                          ggml_tensor *mask, AttendOne kernel) {
    ggml_tensor *args[4] = {q, k_cache, v_cache, mask};
    return ggml_custom_4d(ctx, GGML_TYPE_F32, q->ne[0] * q->ne[1], q->ne[2], 1, 1, args, 4, compute, GGML_N_TASKS_MAX,
                          reinterpret_cast<void *>(kernel));
}

}  // namespace

bool cpu_attention_supported(int head_dim) {
    return chosen_kernel() && head_dim % 16 == 0 && head_dim > 0 && head_dim <= max_head_dim;
}

const char *cpu_attention_family() {
    return family_of(chosen_kernel());
}

ggml_tensor *cpu_attention(ggml_context *ctx, ggml_tensor *q, ggml_tensor *k_cache, ggml_tensor *v_cache,
                           ggml_tensor *mask) {
    return attention_op(ctx, q, k_cache, v_cache, mask, chosen_kernel());
}

ggml_tensor *cpu_attention_avx2(ggml_context *ctx, ggml_tensor *q, ggml_tensor *k_cache, ggml_tensor *v_cache,
                                ggml_tensor *mask) {
    const AttendOne kernel = avx2_kernel();
    return kernel ? attention_op(ctx, q, k_cache, v_cache, mask, kernel) : nullptr;
}

#else  // neither x86-64 nor aarch64: ggml's path everywhere

bool cpu_attention_supported(int) {
    return false;
}

const char *cpu_attention_family() {
    return "off";
}

ggml_tensor *cpu_attention(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, ggml_tensor *) {
    return nullptr;
}

ggml_tensor *cpu_attention_avx2(ggml_context *, ggml_tensor *, ggml_tensor *, ggml_tensor *, ggml_tensor *) {
    return nullptr;
}

#endif

}  // namespace adadecode
