#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <limits>
#include <memory>
#include <new>
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

// One (row, query head) of a pass.
struct AttendPair {
    const float *query;
    const float *mask;
    float *out;
};

// (row, query head) pairs that read the same KV head: a kernel may convert its keys and values once for all of
// them, as long as each pair's result is computed by the same operations as alone.
struct PairRun {
    const ggml_fp16_t *keys;
    size_t key_stride;
    const ggml_fp16_t *values;
    size_t value_stride;
    int64_t n_kv;
    int head_dim;
    const AttendPair *pairs;
    int n_pairs;
};

// Each architecture's section below defines its kernels and chosen_kernel() (the kernel for this CPU, nullptr for
// ggml's path), family_of(kernel) (its name) and avx2_kernel() (the AVX2 one, nullptr where there is none).
using AttendRun = void (*)(const PairRun &);

// A kernel's scratch: floats aligned to 64 bytes, kept between calls and grown when a call needs more.
class AlignedFloats {
public:
    float *get(size_t n) {
        if (n > capacity_) {
            const size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
            data_.reset(static_cast<float *>(std::aligned_alloc(64, bytes)));
            if (!data_)
                throw std::bad_alloc();
            capacity_ = n;
        }
        return data_.get();
    }

private:
    struct Free {
        void operator()(float *p) const { std::free(p); }
    };
    std::unique_ptr<float, Free> data_;
    size_t capacity_ = 0;
};

// The positions a softmax and its weighted sum of values run over: up to the end of the 16-position chunk that holds
// the last live one. Past it every probability is exactly 0 and adds nothing; whole chunks keep each lane summing the
// same terms in the same order, so a row computes the same whether the pass's keys reach beyond its position or not.
inline int64_t covered_positions(int64_t live_end, int64_t n_kv) {
    return std::min(n_kv, (live_end + 15) / 16 * 16);
}

// One past the last position the mask lets through.
inline int64_t live_end_of(const float *mask, int64_t n_kv) {
    while (n_kv > 0 && mask[n_kv - 1] == -std::numeric_limits<float>::infinity()) --n_kv;
    return n_kv;
}

// Each pair's live_end_of into live_ends; returns the furthest of them (0 when every pair is fully masked).
inline int64_t find_live_ends(const PairRun &run, std::vector<int64_t> &live_ends) {
    live_ends.resize(static_cast<size_t>(run.n_pairs));
    int64_t run_end = 0;
    for (int p = 0; p < run.n_pairs; ++p) {
        live_ends[p] = live_end_of(run.pairs[p].mask, run.n_kv);
        run_end = std::max(run_end, live_ends[p]);
    }
    return run_end;
}

// A run kernel's scratch, per thread: the pairs' F16-rounded queries; their scores, then probabilities, over n_kv
// positions padded to 16 (`padded` apart); a block of `block_rows` converted keys, or value rows of
// positions_per_block, whichever is longer; block_rows x 16 value sums per pair; and each pair's live end with the
// furthest of them (find_live_ends).
struct RunScratch {
    float *queries, *probs, *block, *sums;
    const std::vector<int64_t> &live_ends;
    int64_t padded, run_end;
};

inline RunScratch run_scratch(const PairRun &run, int block_rows, int64_t positions_per_block) {
    thread_local AlignedFloats query_buffer, prob_buffer, block_buffer, sum_buffer;
    thread_local std::vector<int64_t> live_ends;
    const size_t n_pairs = static_cast<size_t>(run.n_pairs);
    const int64_t padded = (run.n_kv + 15) / 16 * 16;
    const int64_t run_end = find_live_ends(run, live_ends);
    const size_t block_floats = block_rows * static_cast<size_t>(std::max<int64_t>(run.head_dim, positions_per_block));
    return RunScratch{query_buffer.get(n_pairs * run.head_dim),
                      prob_buffer.get(n_pairs * padded),
                      block_buffer.get(block_floats),
                      sum_buffer.get(n_pairs * block_rows * 16),
                      live_ends,
                      padded,
                      run_end};
}

// A pair whose every position is masked attends to nothing: zeros.
inline void zero_fully_masked(const PairRun &run, const std::vector<int64_t> &live_ends) {
    for (int p = 0; p < run.n_pairs; ++p) {
        if (live_ends[p] == 0)
            std::memset(run.pairs[p].out, 0, sizeof(float) * run.head_dim);
    }
}

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

// Four sums of 16 lanes, acc[i] into lane i, each paired as sum16 pairs them: the horizontal sums of four dot
// products for about the price of one.
inline __m128 sum16_of_4(const Lanes16 acc[4]) {
    __m256 eight[4], four[2];
    for (int i = 0; i < 4; ++i) eight[i] = _mm256_add_ps(acc[i].half[1], acc[i].half[0]);
    for (int i = 0; i < 2; ++i) {  // 128-bit half h: acc[2i + h]'s lanes i and i + 4
        four[i] = _mm256_add_ps(_mm256_permute2f128_ps(eight[2 * i], eight[2 * i + 1], 0x20),
                                _mm256_permute2f128_ps(eight[2 * i], eight[2 * i + 1], 0x31));
    }
    // Half h: acc[h]'s two partial sums, then acc[2 + h]'s.
    const __m256 two = _mm256_add_ps(_mm256_shuffle_ps(four[0], four[1], _MM_SHUFFLE(1, 0, 1, 0)),
                                     _mm256_shuffle_ps(four[0], four[1], _MM_SHUFFLE(3, 2, 3, 2)));
    // Half h: the sums of acc[h] and acc[2 + h], twice.
    const __m256 one = _mm256_add_ps(_mm256_shuffle_ps(two, two, _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm256_shuffle_ps(two, two, _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm_unpacklo_ps(_mm256_castps256_ps128(one), _mm256_extractf128_ps(one, 1));
}

// The dot products of the query q (chunks vectors of 16) with four keys already in F32, `stride` floats apart.
inline __m128 dot4(const float *q, const float *key, int stride, int chunks) {
    Lanes16 acc[4];
    for (int i = 0; i < 4; ++i) {
        for (int h = 0; h < 2; ++h)
            acc[i].half[h] = _mm256_mul_ps(_mm256_load_ps(key + i * stride + 8 * h), _mm256_load_ps(q + 8 * h));
    }
    for (int c = 1; c < chunks; ++c) {
        for (int i = 0; i < 4; ++i) {
            for (int h = 0; h < 2; ++h) {
                acc[i].half[h] = _mm256_fmadd_ps(_mm256_load_ps(key + i * stride + 16 * c + 8 * h),
                                                 _mm256_load_ps(q + 16 * c + 8 * h), acc[i].half[h]);
            }
        }
    }
    return sum16_of_4(acc);
}

// The run kernel of CPUs without AVX-512: attend_run_avx512 (below) on 16-lane vectors held as two 8-lane halves,
// every lane doing the same operations in the same order, so that these CPUs compute the same bits; four keys and
// four dimensions at a time, as 16 registers allow.
void attend_run_avx2(const PairRun &run) {
    const int head_dim = run.head_dim, chunks = head_dim / 16, n_pairs = run.n_pairs;
    const int64_t n_kv = run.n_kv;
    const float neg_inf = -std::numeric_limits<float>::infinity();
    constexpr int64_t positions_per_block = 512;
    const auto [queries, probs, block, sums, live_ends, padded, run_end] = run_scratch(run, 4, positions_per_block);
    for (int p = 0; p < n_pairs; ++p) {
        for (int c = 0; c < 2 * chunks; ++c) {
            _mm256_store_ps(queries + p * head_dim + 8 * c,
                            round_to_f16_avx2(_mm256_loadu_ps(run.pairs[p].query + 8 * c)));
        }
    }
    const __m128 scale = _mm_set1_ps(1.0f / std::sqrt(static_cast<float>(head_dim))), minus_inf = _mm_set1_ps(neg_inf);
    for (int64_t j = 0; j < run_end; j += 4) {
        const int count = static_cast<int>(std::min<int64_t>(4, run_end - j));
        for (int i = 0; i < 4; ++i) {
            for (int c = 0; c < 2 * chunks; ++c) {
                _mm256_store_ps(block + i * head_dim + 8 * c,
                                i < count ? _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(
                                                run.keys + (j + i) * run.key_stride + 8 * c)))
                                          : _mm256_setzero_ps());
            }
        }
        for (int p = 0; p < n_pairs; ++p) {
            if (j >= live_ends[p])
                continue;
            const int live_count = static_cast<int>(std::min<int64_t>(4, live_ends[p] - j));
            // Lanes past the pair's last live position read as masked (a masked load: the mask may end there).
            const __m128i in_range = _mm_cmpgt_epi32(_mm_set1_epi32(live_count), _mm_setr_epi32(0, 1, 2, 3));
            const __m128 mask =
                _mm_blendv_ps(minus_inf, _mm_maskload_ps(run.pairs[p].mask + j, in_range), _mm_castsi128_ps(in_range));
            const __m128 live = _mm_cmp_ps(mask, minus_inf, _CMP_NEQ_UQ);
            __m128 scores = minus_inf;
            if (_mm_movemask_ps(live)) {
                const __m128 dots = dot4(queries + p * head_dim, block, head_dim, chunks);
                scores = _mm_blendv_ps(minus_inf, _mm_add_ps(_mm_mul_ps(dots, scale), mask), live);
            }
            _mm_store_ps(probs + p * padded + j, scores);
        }
    }
    // Softmax per pair, its positions padded with -inf to a whole vector: their e^x is 0, as the AVX-512 kernel's
    // masked lanes are.
    for (int p = 0; p < n_pairs; ++p) {
        if (live_ends[p] == 0)
            continue;
        float *pair_probs = probs + p * padded;
        const int64_t pair_kv = covered_positions(live_ends[p], n_kv);
        const int64_t vectors_end = (pair_kv + 15) / 16 * 16;
        for (int64_t j = (live_ends[p] + 3) / 4 * 4; j < vectors_end; ++j) pair_probs[j] = neg_inf;
        __m256 max8 = _mm256_set1_ps(neg_inf);
        for (int64_t j = 0; j < vectors_end; j += 8) max8 = _mm256_max_ps(_mm256_load_ps(pair_probs + j), max8);
        __m128 max4 = _mm_max_ps(_mm256_castps256_ps128(max8), _mm256_extractf128_ps(max8, 1));
        max4 = _mm_max_ps(max4, _mm_shuffle_ps(max4, max4, _MM_SHUFFLE(1, 0, 3, 2)));
        const __m256 max_v = _mm256_set1_ps(_mm_cvtss_f32(_mm_max_ps(max4, _mm_shuffle_ps(max4, max4, 1))));
        __m256 sum_v[2] = {_mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int64_t j = 0; j < vectors_end; j += 16) {
            Lanes16 e = load16(pair_probs + j);
            for (int h = 0; h < 2; ++h) e.half[h] = _mm256_sub_ps(e.half[h], max_v);
            e = exp16(e);
            store16(pair_probs + j, e);
            for (int h = 0; h < 2; ++h) sum_v[h] = _mm256_add_ps(sum_v[h], e.half[h]);
        }
        const __m256 inv_sum = _mm256_set1_ps(1.0f / sum16(sum_v[0], sum_v[1]));
        for (int64_t j = 0; j < vectors_end; j += 8)
            _mm256_store_ps(pair_probs + j, round_to_f16_avx2(_mm256_mul_ps(_mm256_load_ps(pair_probs + j), inv_sum)));
    }
    // Values, four dimensions and 512 positions at a time (8 KiB of F32 rows that stay in the L1 cache).
    const int64_t values_end = covered_positions(run_end, n_kv);
    for (int d = 0; d < head_dim; d += 4) {
        std::memset(sums, 0, sizeof(float) * n_pairs * 4 * 16);
        for (int64_t begin = 0; begin < values_end; begin += positions_per_block) {
            const int64_t end = std::min(values_end, begin + positions_per_block);
            for (int i = 0; i < 4; ++i) {
                const ggml_fp16_t *row = run.values + (d + i) * run.value_stride;
                for (int64_t j = begin; j < end; j += 8) {
                    alignas(16) ggml_fp16_t part[8] = {};
                    const ggml_fp16_t *src = row + j;
                    if (end - j < 8) {  // the cache's last positions, zeros after them
                        std::memcpy(part, src, sizeof(ggml_fp16_t) * (end - j));
                        src = part;
                    }
                    _mm256_store_ps(block + i * positions_per_block + (j - begin),
                                    _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(src))));
                }
            }
            for (int p = 0; p < n_pairs; ++p) {
                const int64_t pair_kv = covered_positions(live_ends[p], n_kv), full = pair_kv / 16 * 16;
                if (begin >= pair_kv)
                    continue;
                const float *pair_probs = probs + p * padded;
                float *pair_sums = sums + p * 4 * 16;
                Lanes16 acc[4];
                for (int i = 0; i < 4; ++i) acc[i] = load16(pair_sums + 16 * i);
                for (int64_t j = begin; j < std::min(full, end); j += 16) {
                    const Lanes16 prob = load16(pair_probs + j);
                    for (int i = 0; i < 4; ++i) {
                        const float *v = block + i * positions_per_block + (j - begin);
                        for (int h = 0; h < 2; ++h)
                            acc[i].half[h] = _mm256_fmadd_ps(_mm256_load_ps(v + 8 * h), prob.half[h], acc[i].half[h]);
                    }
                }
                if (full < pair_kv && full < end) {  // the pair's last positions, zeros after them
                    const Lanes16 lanes = first_lanes(static_cast<int>(pair_kv - full));
                    const Lanes16 prob = load16(pair_probs + full);
                    for (int i = 0; i < 4; ++i) {
                        const float *v = block + i * positions_per_block + (full - begin);
                        for (int h = 0; h < 2; ++h) {
                            acc[i].half[h] = _mm256_fmadd_ps(_mm256_and_ps(_mm256_load_ps(v + 8 * h), lanes.half[h]),
                                                             prob.half[h], acc[i].half[h]);
                        }
                    }
                }
                for (int i = 0; i < 4; ++i) store16(pair_sums + 16 * i, acc[i]);
            }
        }
        for (int p = 0; p < n_pairs; ++p) {
            if (live_ends[p] == 0)
                continue;
            Lanes16 acc[4];
            for (int i = 0; i < 4; ++i) acc[i] = load16(sums + p * 4 * 16 + 16 * i);
            _mm_storeu_ps(run.pairs[p].out + d, sum16_of_4(acc));
        }
    }
    zero_fully_masked(run, live_ends);
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

// Sixteen sums of 16 lanes, acc[i] into lane i, each paired as sum16_512 pairs them: the horizontal sums of 16 dot
// products for about the price of two.
inline __m512 sum16_of_16(const __m512 acc[16]) {
    __m512 eight[8], four[4], two[2];
    for (int i = 0; i < 8; ++i) {  // lanes 0-7: acc[2i]'s lanes i and i + 8; lanes 8-15: acc[2i + 1]'s
        eight[i] = _mm512_add_ps(_mm512_shuffle_f32x4(acc[2 * i], acc[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                                 _mm512_shuffle_f32x4(acc[2 * i], acc[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    }
    for (int i = 0; i < 4; ++i) {  // 128-bit block b: acc[4i + b]'s four partial sums
        four[i] = _mm512_add_ps(_mm512_shuffle_f32x4(eight[2 * i], eight[2 * i + 1], _MM_SHUFFLE(2, 0, 2, 0)),
                                _mm512_shuffle_f32x4(eight[2 * i], eight[2 * i + 1], _MM_SHUFFLE(3, 1, 3, 1)));
    }
    for (int i = 0; i < 2; ++i) {  // block b: acc[8i + b]'s two partial sums, then acc[8i + 4 + b]'s
        two[i] = _mm512_add_ps(_mm512_shuffle_ps(four[2 * i], four[2 * i + 1], _MM_SHUFFLE(1, 0, 1, 0)),
                               _mm512_shuffle_ps(four[2 * i], four[2 * i + 1], _MM_SHUFFLE(3, 2, 3, 2)));
    }
    // Lane 4b + i: the sum of acc[b + 4i].
    const __m512 one = _mm512_add_ps(_mm512_shuffle_ps(two[0], two[1], _MM_SHUFFLE(2, 0, 2, 0)),
                                     _mm512_shuffle_ps(two[0], two[1], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15), one);
}

// The dot products of the query q (chunks vectors of 16) with 16 keys already in F32, `stride` floats apart; the chunks
// outermost so that 16 independent sums keep the FMA units busy.
inline __m512 dot16(const float *q, const float *key, int stride, int chunks) {
    __m512 acc[16];
    const __m512 q0 = _mm512_load_ps(q);
#pragma GCC unroll 16
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_mul_ps(_mm512_load_ps(key + i * stride), q0);
    for (int c = 1; c < chunks; ++c) {
        const __m512 qc = _mm512_load_ps(q + 16 * c);
#pragma GCC unroll 16
        for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(_mm512_load_ps(key + i * stride + 16 * c), qc, acc[i]);
    }
    return sum16_of_16(acc);
}

// F16 to F32 of `count` (<= 16) rows of `n` values (a multiple of 16) from `src`, `src_stride` apart, into `dst`,
// `n` floats apart; rows count..15 zeros.
inline void convert_rows(const ggml_fp16_t *src, size_t src_stride, int count, int64_t n, float *dst) {
    for (int i = 0; i < 16; ++i) {
        for (int64_t c = 0; c < n; c += 16)
            _mm512_store_ps(dst + i * n + c, i < count ? load_f16(src + i * src_stride + c) : _mm512_setzero_ps());
    }
}

// The pairs of a run, each by the same operations in the same order whatever else the run holds, with every
// key and value converted from F16 once for the whole run: on Zen 4 the conversion (vcvtph2ps, half the rate of an
// FMA) was what a pair's attention spent most of its time on, and a run holds the query heads that share a KV head
// (6 on the 1.5B) in every row of the pass.
void attend_run_avx512(const PairRun &run) {
    const int head_dim = run.head_dim, chunks = head_dim / 16, n_pairs = run.n_pairs;
    const int64_t n_kv = run.n_kv;
    const float neg_inf = -std::numeric_limits<float>::infinity();
    // Values: 16 dimensions and 256 positions at a time (below).
    constexpr int64_t positions_per_block = 256;
    const auto [queries, probs, block, sums, live_ends, padded, run_end] = run_scratch(run, 16, positions_per_block);
    for (int p = 0; p < n_pairs; ++p) {
        for (int c = 0; c < chunks; ++c)
            _mm512_store_ps(queries + p * head_dim + 16 * c,
                            round_to_f16(_mm512_loadu_ps(run.pairs[p].query + 16 * c)));
    }
    const __m512 scale = _mm512_set1_ps(1.0f / std::sqrt(static_cast<float>(head_dim)));
    const __m512 minus_inf = _mm512_set1_ps(neg_inf);
    // Scores, 16 keys at a time; a masked position's is -inf whatever its key holds. A pair stops at its last live
    // position (a causal prompt pass: each row at its own).
    for (int64_t j = 0; j < run_end; j += 16) {
        convert_rows(run.keys + j * run.key_stride, run.key_stride,
                     static_cast<int>(std::min<int64_t>(16, run_end - j)), head_dim, block);
        for (int p = 0; p < n_pairs; ++p) {
            if (j >= live_ends[p])
                continue;
            const int count = static_cast<int>(std::min<int64_t>(16, live_ends[p] - j));
            const __mmask16 in_range = static_cast<__mmask16>((1u << count) - 1);
            const __m512 mask16 = _mm512_maskz_loadu_ps(in_range, run.pairs[p].mask + j);
            const __mmask16 live = _mm512_mask_cmp_ps_mask(in_range, mask16, minus_inf, _CMP_NEQ_UQ);
            __m512 scores = minus_inf;
            if (live) {
                const __m512 dots = dot16(queries + p * head_dim, block, head_dim, chunks);
                scores = _mm512_mask_add_ps(minus_inf, live, _mm512_mul_ps(dots, scale), mask16);
            }
            _mm512_store_ps(probs + p * padded + j, scores);
        }
    }
    // Softmax per pair, over its covered_positions.
    for (int p = 0; p < n_pairs; ++p) {
        if (live_ends[p] == 0)
            continue;
        float *pair_probs = probs + p * padded;
        const int64_t pair_kv = covered_positions(live_ends[p], n_kv), full = pair_kv / 16 * 16;
        const __mmask16 tail = static_cast<__mmask16>((1u << (pair_kv - full)) - 1);
        __m512 max16 = minus_inf;
        for (int64_t j = 0; j < full; j += 16) max16 = _mm512_max_ps(_mm512_load_ps(pair_probs + j), max16);
        if (tail)
            max16 = _mm512_max_ps(_mm512_mask_load_ps(minus_inf, tail, pair_probs + full), max16);
        const __m512 max_v = _mm512_set1_ps(_mm512_reduce_max_ps(max16));
        __m512 sum_v = _mm512_setzero_ps();
        for (int64_t j = 0; j < full; j += 16) {
            const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_load_ps(pair_probs + j), max_v));
            _mm512_store_ps(pair_probs + j, e);
            sum_v = _mm512_add_ps(sum_v, e);
        }
        if (tail) {
            const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_load_ps(tail, pair_probs + full), max_v));
            _mm512_store_ps(pair_probs + full, _mm512_maskz_mov_ps(tail, e));
            sum_v = _mm512_add_ps(sum_v, _mm512_maskz_mov_ps(tail, e));
        }
        const __m512 inv_sum = _mm512_set1_ps(1.0f / sum16_512(sum_v));
        for (int64_t j = 0; j < full + (tail ? 16 : 0); j += 16)
            _mm512_store_ps(pair_probs + j, round_to_f16(_mm512_mul_ps(_mm512_load_ps(pair_probs + j), inv_sum)));
    }
    // Values, 16 dimensions and 256 positions at a time: their rows converted once into 16 KiB that stay in the L1
    // cache while every pair reads them (from L2, 16 dimensions' whole rows took two cycles a multiply-add on Zen 4);
    // each probability vector loaded once for 16 rows. A pair's 16 sums wait in `sums` between position blocks,
    // and each lane adds its terms in the order the one-pair kernels do.
    const int64_t values_end = covered_positions(run_end, n_kv);
    for (int d = 0; d < head_dim; d += 16) {
        const ggml_fp16_t *value = run.values + d * run.value_stride;
        std::memset(sums, 0, sizeof(float) * n_pairs * 16 * 16);
        for (int64_t begin = 0; begin < values_end; begin += positions_per_block) {
            const int64_t end = std::min(values_end, begin + positions_per_block);
            for (int i = 0; i < 16; ++i) {
                for (int64_t j = begin; j < end; j += 16) {
                    const int count = static_cast<int>(std::min<int64_t>(16, end - j));
                    const ggml_fp16_t *src = value + i * run.value_stride + j;
                    _mm512_store_ps(block + i * positions_per_block + (j - begin),
                                    count == 16 ? load_f16(src) : load_f16_partial(src, count));
                }
            }
            for (int p = 0; p < n_pairs; ++p) {
                const int64_t pair_kv = covered_positions(live_ends[p], n_kv), full = pair_kv / 16 * 16;
                if (begin >= pair_kv)
                    continue;
                const float *pair_probs = probs + p * padded;
                float *pair_sums = sums + p * 16 * 16;
                __m512 acc[16];
#pragma GCC unroll 16
                for (int i = 0; i < 16; ++i) acc[i] = _mm512_load_ps(pair_sums + 16 * i);
                for (int64_t j = begin; j < std::min(full, end); j += 16) {
                    const __m512 prob = _mm512_load_ps(pair_probs + j);
                    const float *column = block + (j - begin);
#pragma GCC unroll 16
                    for (int i = 0; i < 16; ++i)
                        acc[i] = _mm512_fmadd_ps(_mm512_load_ps(column + i * positions_per_block), prob, acc[i]);
                }
                if (full < pair_kv && full < end) {  // the pair's last positions, zeros after them
                    const __mmask16 tail = static_cast<__mmask16>((1u << (pair_kv - full)) - 1);
                    const __m512 prob = _mm512_maskz_load_ps(tail, pair_probs + full);
                    const float *column = block + (full - begin);
#pragma GCC unroll 16
                    for (int i = 0; i < 16; ++i) {
                        acc[i] =
                            _mm512_fmadd_ps(_mm512_maskz_load_ps(tail, column + i * positions_per_block), prob, acc[i]);
                    }
                }
#pragma GCC unroll 16
                for (int i = 0; i < 16; ++i) _mm512_store_ps(pair_sums + 16 * i, acc[i]);
            }
        }
        for (int p = 0; p < n_pairs; ++p) {
            if (live_ends[p] == 0)
                continue;
            __m512 acc[16];
#pragma GCC unroll 16
            for (int i = 0; i < 16; ++i) acc[i] = _mm512_load_ps(sums + p * 16 * 16 + 16 * i);
            _mm512_storeu_ps(run.pairs[p].out + d, sum16_of_16(acc));
        }
    }
    zero_fully_masked(run, live_ends);
}

#pragma GCC pop_options

// The kernel for this CPU: AVX-512 where it has it, else AVX2 (bitwise the same results); ADADECODE_ATTENTION=0
// keeps ggml's path, =avx2 the AVX2 kernel on any CPU (to measure what an AVX2-only CPU runs), =avx512 the default.
AttendRun chosen_kernel() {
    static const AttendRun kernel = []() -> AttendRun {
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
        return has_avx512 && wanted != "avx2" ? attend_run_avx512 : attend_run_avx2;
    }();
    return kernel;
}

const char *family_of(AttendRun kernel) {
    return kernel == attend_run_avx512 ? "avx512" : kernel == attend_run_avx2 ? "avx2" : "off";
}

AttendRun avx2_kernel() {
    return attend_run_avx2;
}

}  // namespace

#elif defined(ADADECODE_ATTENTION_ARM)

#include "attention_neon.inc"

#endif

#if defined(ADADECODE_ATTENTION_X86) || defined(ADADECODE_ATTENTION_ARM)

namespace {

// src: the queries, the K cache, the V cache, the mask; userdata: the kernel (an AttendRun). The (row, query head)
// pairs are ordered by KV head, then row, then query head, and split evenly between the threads; each thread hands
// its share to the kernel in runs of one KV head's pairs.
void compute(ggml_tensor *dst, int ith, int nth, void *kernel) {
    const AttendRun attend = reinterpret_cast<AttendRun>(kernel);
    const ggml_tensor *q = dst->src[0], *k = dst->src[1], *v = dst->src[2], *mask = dst->src[3];
    const int head_dim = static_cast<int>(q->ne[0]);
    const int64_t n_head = q->ne[1], n_rows = q->ne[2], n_kv = mask->ne[0];
    const int64_t group = n_head / (k->ne[0] / head_dim);  // query heads per kv head
    const int64_t per_kv_head = n_rows * group, pairs = n_rows * n_head;
    const int64_t per_thread = (pairs + nth - 1) / nth;
    const int64_t first = std::min(pairs, per_thread * ith), last = std::min(pairs, first + per_thread);
    // A kernel's scratch grows with the pairs of a run (a prompt pass has thousands), and sharing the conversion
    // among more than a few dozen gains nothing more.
    constexpr int64_t max_run = 64;
    thread_local std::vector<AttendPair> run_pairs;
    const char *q_data = static_cast<const char *>(q->data);
    const char *mask_data = static_cast<const char *>(mask->data);
    char *out_data = static_cast<char *>(dst->data);
    for (int64_t begin = first; begin < last;) {
        const int64_t kv_head = begin / per_kv_head;
        const int64_t end = std::min({last, (kv_head + 1) * per_kv_head, begin + max_run});
        run_pairs.clear();
        for (int64_t pair = begin; pair < end; ++pair) {
            const int64_t row = pair % per_kv_head / group, head = kv_head * group + pair % group;
            run_pairs.push_back({reinterpret_cast<const float *>(q_data + row * q->nb[2] + head * q->nb[1]),
                                 reinterpret_cast<const float *>(mask_data + row * mask->nb[1]),
                                 reinterpret_cast<float *>(out_data + row * dst->nb[1]) + head * head_dim});
        }
        const PairRun run{
            static_cast<const ggml_fp16_t *>(k->data) + kv_head * head_dim,
            k->nb[1] / sizeof(ggml_fp16_t),
            reinterpret_cast<const ggml_fp16_t *>(static_cast<const char *>(v->data) + kv_head * head_dim * v->nb[1]),
            v->nb[1] / sizeof(ggml_fp16_t),
            n_kv,
            head_dim,
            run_pairs.data(),
            static_cast<int>(run_pairs.size())};
        attend(run);
        begin = end;
    }
}

ggml_tensor *attention_op(ggml_context *ctx, ggml_tensor *q, ggml_tensor *k_cache, ggml_tensor *v_cache,
                          ggml_tensor *mask, AttendRun kernel) {
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
    const AttendRun kernel = avx2_kernel();
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
