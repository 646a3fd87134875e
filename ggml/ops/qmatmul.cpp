#include "qmatmul.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iterator>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ADADECODE_QMATMUL_X86 1
#include <immintrin.h>
// GCC 12's AVX-512 intrinsics build their results from a deliberately undefined register and warn about it.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#elif defined(__aarch64__) && (defined(__GNUC__) || defined(__clang__))
#define ADADECODE_QMATMUL_ARM 1
#include <arm_neon.h>
#endif

namespace adadecode {

namespace {

// qmatmul_set_two_row_kernel's argument, whatever the architecture.
void require_two_row_width(int width) {
    if (width != 2 && width != 3)
        throw std::invalid_argument("qmatmul_set_two_row_kernel: width must be 2 or 3, got " + std::to_string(width));
}

}  // namespace

// Per thread, the tiles of its share not yet claimed, [front, back) in the op's tile numbers, packed with a bit
// saying the range was set up in this run of the op; and how many threads have found no tile left. Each on a cache
// line of its own: an owner claims from its front on a line no other core touches until it comes to steal.
struct TileShare::State {
    struct alignas(64) Range {
        std::atomic<uint64_t> value{0};
    };
    explicit State(int n) : n_threads(n), ranges(new Range[n]) {}
    int n_threads;
    std::unique_ptr<Range[]> ranges;
    alignas(64) std::atomic<int> finished{0};
};

TileShare::TileShare(int n_threads) : state_(std::make_unique<State>(n_threads)) {}
TileShare::~TileShare() = default;

bool qmatmul_tile_sharing_default() {
    static const bool on = [] {
        const char *env = std::getenv("ADADECODE_QMATMUL_SHARE");
        return !(env && std::string(env) == "0");
    }();
    return on;
}

#if defined(ADADECODE_QMATMUL_X86) || defined(ADADECODE_QMATMUL_ARM)

namespace {

// Activations are quantized per row. For the 32-weight block types a row is three arrays: all values, the block
// scales, the block sums (so that the AVX-512 kernels load two blocks' values at once). For the K-quants it is blocks
// of 256 values with the sums of every 16 (their sub-block minimums / offsets multiply those sums).
constexpr size_t act32_bytes_per_block = 32 + sizeof(float) + sizeof(int32_t);

struct Act32 {
    const int8_t *q;
    const float *d;
    const int32_t *sum;
    Act32() = default;
    Act32(const uint8_t *row, int64_t n_blocks)
        : q(reinterpret_cast<const int8_t *>(row)),
          d(reinterpret_cast<const float *>(row + 32 * n_blocks)),
          sum(reinterpret_cast<const int32_t *>(row + 36 * n_blocks)) {}
};

struct ActBlock256 {
    float d;
    int16_t sums16[16];
    int16_t sums32[8];  // sums of every 32 (the packed Q4_K kernel takes them in pairs)
    int8_t q[256];
};

// Byte layouts of ggml's quantized blocks (the GGUF format): sizes checked against ggml at start-up.
constexpr size_t q4_1_bytes = 20;   // f16 d, f16 m, 16 bytes of nibbles
constexpr size_t q5_0_bytes = 22;   // f16 d, 32 high bits, 16 bytes of nibbles
constexpr size_t q8_0_bytes = 34;   // f16 d, 32 int8
constexpr size_t q4_k_bytes = 144;  // f16 d, f16 dmin, 12 bytes of 6-bit scales and mins, 128 bytes of nibbles
constexpr size_t q6_k_bytes = 210;  // 128 bytes low nibbles, 64 bytes high 2 bits, 16 int8 scales, f16 d

// Q4_K re-laid out for the AVX-512 kernels (qmatmul_pack): 16 weight rows interleaved, so that one register holds 4
// consecutive weights of each of 16 rows and every 32-bit lane belongs to one output. A lane then sums its
// sub-block's products in int16 before one multiply by the sub-block's scale, where the file layout (a sub-block of
// one row per register) needs a multiply per 64 products. Per 16 rows and block of 256 values:
//   f16 d[16] | f16 dmin[16] | u8 scales[sub-block][row] | u8 mins[pair of sub-blocks][row][2] |
//   qs[sub-block][4 registers][row][4 bytes]: register t, byte i: low nibble = value 8t + i of the sub-block,
//   high nibble = value 8t + 4 + i.
// Same size as the file's 16 x 144 bytes but for 64: the 6-bit scales and mins are stored as bytes.
constexpr int64_t packed_rows = 16;
constexpr size_t packed_dmin = 32, packed_scales = 64, packed_mins = 192, packed_qs = 320;
constexpr size_t q4_k_packed_bytes = 2368;

// Q6_K re-laid out the same way (16 rows, every 32-bit lane one output, four consecutive weights of a row per lane).
// A lane sums a 16-value sub-block's products in int32 before one multiply by the sub-block's scale; the file layout
// needs a multiply-add per 32 products. Weights are stored as unsigned 6-bit values u = q + 32, and 32 times the
// activation sums of each sub-block come off at the end. Per 16 rows and block of 256 values, in the order the kernel
// reads them (one stream: with the parts of a sub-block apart, streaming from memory ran at half speed):
//   f16 d[16] | 8 x (pair of sub-blocks: i8 scales[row][2] | 2 x (sub-block: low[2 registers][row][4 bytes] |
//   high[row][4 bytes])).
// low, register j, byte i: low nibble = low 4 bits of value 8j + i of the sub-block, high nibble = those of value
// 8j + 4 + i; high, byte i, bits 2t..2t+1 = top 2 bits of value 4t + i. Exactly the file's 16 x 210 bytes.
constexpr size_t q6_packed_pairs = 32, q6_packed_pair_bytes = 416, q6_packed_sub_bytes = 192;
constexpr size_t q6_k_packed_bytes = 3360;

// Q5_0 re-laid out the same way (16 rows, every 32-bit lane one output, four consecutive weights of a row per lane):
// the file-layout kernel spends more time expanding each row's fifth bits than multiplying (12 GB/s for one row).
// The nibbles stay as the file has them, four bytes of each row per register; the fifth bits become byte masks, so
// that one masked add puts 16 into exactly the bytes that need it, for 16 rows at once. Weights are unsigned
// (u = q + 16); 16 times each activation block's sum comes off at the end. Per 16 rows and block of 32 values:
//   f16 d[16] | u64 masks[8]: bit 4r + i of mask g = fifth bit of value 4g + i of row r |
//   qs[4 registers][row][4 bytes]: register t = the file's bytes 4t..4t+3, whose low nibbles are values 4t + i
//   and high nibbles values 16 + 4t + i.
// Exactly the file's 16 x 22 bytes.
constexpr size_t q5_packed_masks = 32, q5_packed_qs = 96;
constexpr size_t q5_0_packed_bytes = 352;

// Q4_1 re-laid out the same way: the nibbles as Q5_0's, without fifth bits; each row's minimum times the activation
// block's sum is added at the end. Per 16 rows and block of 32 values: f16 d[16] | f16 m[16] | qs[4 registers][row]
// [4 bytes] as Q5_0's. Exactly the file's 16 x 20 bytes.
constexpr size_t q4_1_packed_mins = 32, q4_1_packed_qs = 64;
constexpr size_t q4_1_packed_bytes = 320;

// Q8_0 re-laid out the same way. Weights are stored unsigned (u = q + 128, the sign bit flipped), as the unsigned
// operand of the byte dot product; 128 times each activation block's sum comes off at the end. Per 16 rows and
// block of 32 values: f16 d[16] | qs[8 registers][row][4 bytes]: register t holds values 4t..4t+3 of each row.
// Exactly the file's 16 x 34 bytes.
constexpr size_t q8_packed_qs = 32;
constexpr size_t q8_0_packed_bytes = 544;

// The 8 six-bit scales and 8 six-bit minimums of a Q4_K block, packed in 12 bytes as words a, b, c: scale j < 4
// is the low 6 bits of byte j of a, minimum j < 4 those of b; scale j >= 4 takes its low 4 bits from byte j-4 of c
// and its top 2 bits from the top of byte j-4 of a, minimum j >= 4 the high nibble of c's byte and b's top bits.
inline void q4_k_scales(const uint8_t *packed, uint8_t scales[8], uint8_t mins[8]) {
    uint32_t a, b, c;
    std::memcpy(&a, packed, 4);
    std::memcpy(&b, packed + 4, 4);
    std::memcpy(&c, packed + 8, 4);
    const uint32_t scales_low = a & 0x3F3F3F3F, mins_low = b & 0x3F3F3F3F;
    const uint32_t scales_high = (c & 0x0F0F0F0F) | ((a >> 2) & 0x30303030);
    const uint32_t mins_high = ((c >> 4) & 0x0F0F0F0F) | ((b >> 2) & 0x30303030);
    std::memcpy(scales, &scales_low, 4);
    std::memcpy(scales + 4, &scales_high, 4);
    std::memcpy(mins, &mins_low, 4);
    std::memcpy(mins + 4, &mins_high, 4);
}

// One block of 16 rows from the file layout into the packed one (see q4_k_packed_bytes).
void pack_q4_k_block(const uint8_t *first_row, size_t row_bytes, uint8_t *out) {
    for (int64_t r = 0; r < packed_rows; ++r) {
        const uint8_t *block = first_row + r * row_bytes;
        std::memcpy(out + 2 * r, block, 2);
        std::memcpy(out + packed_dmin + 2 * r, block + 2, 2);
        uint8_t scales[8], mins[8];
        q4_k_scales(block + 4, scales, mins);
        for (int sub = 0; sub < 8; ++sub) {
            out[packed_scales + packed_rows * sub + r] = scales[sub];
            out[packed_mins + 2 * packed_rows * (sub / 2) + 2 * r + sub % 2] = mins[sub];
        }
        // The file: byte l of the 32-byte run j holds value 64j + l (low nibble) and 64j + 32 + l (high nibble).
        const uint8_t *qs = block + 16;
        for (int sub = 0; sub < 8; ++sub) {
            uint8_t values[32];
            const int shift = 4 * (sub % 2);
            for (int l = 0; l < 32; ++l) values[l] = (qs[32 * (sub / 2) + l] >> shift) & 0x0F;
            uint8_t *dst = out + packed_qs + 256 * sub + 4 * r;
            for (int t = 0; t < 4; ++t) {
                for (int i = 0; i < 4; ++i) dst[64 * t + i] = values[8 * t + i] | (values[8 * t + 4 + i] << 4);
            }
        }
    }
}

// One block of 16 rows from the file layout into the packed one (see q5_0_packed_bytes). In the file, value i < 16
// has its low 4 bits in the low nibble of qs[i], value 16 + i in the high nibble, and value j its fifth bit at bit
// j of the 32-bit qh.
void pack_q5_0_block(const uint8_t *first_row, size_t row_bytes, uint8_t *out) {
    uint64_t masks[8] = {};
    for (int64_t r = 0; r < packed_rows; ++r) {
        const uint8_t *block = first_row + r * row_bytes;
        std::memcpy(out + 2 * r, block, 2);
        uint32_t high_bits;
        std::memcpy(&high_bits, block + 2, sizeof(high_bits));
        for (int g = 0; g < 8; ++g) {
            for (int i = 0; i < 4; ++i) {
                if (high_bits >> (4 * g + i) & 1u)
                    masks[g] |= uint64_t(1) << (4 * r + i);
            }
        }
        for (int t = 0; t < 4; ++t) std::memcpy(out + q5_packed_qs + 64 * t + 4 * r, block + 6 + 4 * t, 4);
    }
    std::memcpy(out + q5_packed_masks, masks, sizeof(masks));
}

// One block of 16 rows from the file layout into the packed one (see q4_1_packed_bytes).
void pack_q4_1_block(const uint8_t *first_row, size_t row_bytes, uint8_t *out) {
    for (int64_t r = 0; r < packed_rows; ++r) {
        const uint8_t *block = first_row + r * row_bytes;
        std::memcpy(out + 2 * r, block, 2);
        std::memcpy(out + q4_1_packed_mins + 2 * r, block + 2, 2);
        for (int t = 0; t < 4; ++t) std::memcpy(out + q4_1_packed_qs + 64 * t + 4 * r, block + 4 + 4 * t, 4);
    }
}

// One block of 16 rows from the file layout into the packed one (see q8_0_packed_bytes).
void pack_q8_0_block(const uint8_t *first_row, size_t row_bytes, uint8_t *out) {
    for (int64_t r = 0; r < packed_rows; ++r) {
        const uint8_t *block = first_row + r * row_bytes;
        std::memcpy(out + 2 * r, block, 2);
        for (int t = 0; t < 8; ++t) {
            for (int i = 0; i < 4; ++i) out[q8_packed_qs + 64 * t + 4 * r + i] = block[2 + 4 * t + i] ^ 0x80;
        }
    }
}

// One block of 16 rows from the file layout into the packed one (see q6_k_packed_bytes). In the file, value
// 128h + 32k + l (h, k < 2 halves and quarters of a half, l < 32) has its low 4 bits in ql[64h + l + 32 (k % 2)]
// (low nibble for k < 2, high for k >= 2) and its top 2 bits at bits 2k of qh[32h + l].
void pack_q6_k_block(const uint8_t *first_row, size_t row_bytes, uint8_t *out) {
    for (int64_t r = 0; r < packed_rows; ++r) {
        const uint8_t *block = first_row + r * row_bytes;
        const uint8_t *ql = block, *qh = block + 128;
        std::memcpy(out + 2 * r, block + 208, 2);
        for (int sub = 0; sub < 16; ++sub) {
            out[q6_packed_pairs + q6_packed_pair_bytes * (sub / 2) + 2 * r + sub % 2] = block[192 + sub];
        }
        uint8_t values[256];
        for (int h = 0; h < 2; ++h) {
            for (int k = 0; k < 4; ++k) {
                for (int l = 0; l < 32; ++l) {
                    const uint8_t low = ql[64 * h + l + 32 * (k % 2)] >> (4 * (k / 2)) & 0x0F;
                    const uint8_t top = qh[32 * h + l] >> (2 * k) & 0x03;
                    values[128 * h + 32 * k + l] = static_cast<uint8_t>(low | top << 4);
                }
            }
        }
        for (int sub = 0; sub < 16; ++sub) {
            const uint8_t *v = values + 16 * sub;
            uint8_t *sub_out =
                out + q6_packed_pairs + q6_packed_pair_bytes * (sub / 2) + 32 + q6_packed_sub_bytes * (sub % 2);
            for (int j = 0; j < 2; ++j) {
                uint8_t *dst = sub_out + 64 * j + 4 * r;
                for (int i = 0; i < 4; ++i) dst[i] = (v[8 * j + i] & 0x0F) | (v[8 * j + 4 + i] & 0x0F) << 4;
            }
            uint8_t *high = sub_out + 128 + 4 * r;
            for (int i = 0; i < 4; ++i) {
                high[i] = 0;
                for (int t = 0; t < 4; ++t) high[i] |= static_cast<uint8_t>((v[4 * t + i] >> 4) << (2 * t));
            }
        }
    }
}

constexpr int max_group = 8;         // most activation rows per kernel call
constexpr int64_t weight_tile = 16;  // weight rows kept hot in cache while the activation groups pass over them
constexpr int64_t act_chunk = 64;    // activation rows per pass over the weights (prefill)

// out[r * weight_tile + i]: weight row i (of n_rows <= weight_tile, row_bytes apart) times activation row r. By
// activation row, as a packed kernel's accumulators hold them: one store each, and one copy per output row. Weight
// row by weight row, the two transpositions in between took 2 % of a four-row pass of the 1.5B (Intel Xeon).
using TileKernel = void (*)(const uint8_t *w, size_t row_bytes, int64_t n_rows, const uint8_t *const *act,
                            int64_t n_blocks, float *out);

// Weight row i's results for NR activation rows (a file-layout kernel's, one weight row at a time) into a tile.
template <int NR>
inline void place_weight_row(const float *row_out, int64_t i, float *out) {
    for (int r = 0; r < NR; ++r) out[r * weight_tile + i] = row_out[r];
}

struct TypeKernels {
    ggml_type type;
    size_t block_bytes;
    int block_values;  // 32, or 256 for the K-quants
    int group_size;    // activation rows per call: 4 fit in AVX2's 16 registers, 8 in AVX-512's 32
    TileKernel group[max_group];
    bool block_pairs;  // takes blocks two at a time: rows with an odd number of blocks go to the AVX2 kernel
};
constexpr size_t n_kernel_types = 5;  // entries in every table of a family: Q4_1, Q5_0, Q8_0, Q4_K, Q6_K (any order)

}  // namespace

#endif

#ifdef ADADECODE_QMATMUL_X86

namespace {

#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

inline float f16_at(const uint8_t *p) {
    uint16_t h;
    std::memcpy(&h, p, sizeof(h));
    return _cvtsh_ss(h);
}

inline float horizontal_sum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Activation quantization: scale amax/127 per block, round to nearest (ties to even). Vectorised because for the
// wide ffn_down input it is not negligible next to a one-row product.
inline __m256 abs_ps(__m256 v) {
    return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v);
}

inline float block_amax(const float *v, int n) {
    __m256 m = _mm256_setzero_ps();
    for (int i = 0; i < n; i += 8) m = _mm256_max_ps(m, abs_ps(_mm256_loadu_ps(v + i)));
    __m128 h = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
    h = _mm_max_ps(h, _mm_movehl_ps(h, h));
    h = _mm_max_ss(h, _mm_movehdup_ps(h));
    return _mm_cvtss_f32(h);
}

inline __m256i round_scaled(const float *v, __m256 inverse_scale) {
    return _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(_mm256_loadu_ps(v), inverse_scale),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}

inline int horizontal_sum_i32(__m256i v) {
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
    return _mm_cvtsi128_si32(s);
}

// 32 floats -> 32 int8 in order; sums of the two 16-value halves.
inline void quantize_32(const float *v, __m256 inverse_scale, int8_t *out, int *sum_low, int *sum_high) {
    const __m256i a = round_scaled(v, inverse_scale), b = round_scaled(v + 8, inverse_scale);
    const __m256i c = round_scaled(v + 16, inverse_scale), d = round_scaled(v + 24, inverse_scale);
    *sum_low = horizontal_sum_i32(_mm256_add_epi32(a, b));
    *sum_high = horizontal_sum_i32(_mm256_add_epi32(c, d));
    // The packs work per 128-bit lane; the permutation puts the 4-byte groups back in order.
    const __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(out),
                        _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
}

void quantize_row_32_avx2(const float *x, int64_t n_blocks, uint8_t *out) {
    int8_t *q = reinterpret_cast<int8_t *>(out);
    float *scales = reinterpret_cast<float *>(out + 32 * n_blocks);
    int32_t *sums = reinterpret_cast<int32_t *>(out + 36 * n_blocks);
    for (int64_t b = 0; b < n_blocks; ++b) {
        const float *v = x + 32 * b;
        const float d = block_amax(v, 32) / 127.0f;
        const __m256 id = _mm256_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
        int low, high;
        quantize_32(v, id, q + 32 * b, &low, &high);
        scales[b] = d;
        sums[b] = low + high;
    }
}

void quantize_row_256_avx2(const float *x, int64_t n_blocks, ActBlock256 *out) {
    for (int64_t b = 0; b < n_blocks; ++b) {
        const float *v = x + 256 * b;
        const float d = block_amax(v, 256) / 127.0f;
        const __m256 id = _mm256_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
        for (int i = 0; i < 8; ++i) {
            int low, high;
            quantize_32(v + 32 * i, id, out[b].q + 32 * i, &low, &high);
            out[b].sums16[2 * i] = static_cast<int16_t>(low);
            out[b].sums16[2 * i + 1] = static_cast<int16_t>(high);
            out[b].sums32[i] = static_cast<int16_t>(low + high);
        }
        out[b].d = d;
    }
}

// 16 packed bytes of nibbles -> 32 bytes: low nibbles (values 0..15) then high nibbles (16..31).
inline __m256i unpack_nibbles_32(const uint8_t *p) {
    const __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i *>(p));
    const __m128i m4 = _mm_set1_epi8(0x0F);
    return _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(v, 4), m4), _mm_and_si128(v, m4));
}

// Signed weights times signed activations: maddubs needs an unsigned operand, so |w| times a with w's sign.
inline __m256i dot_signed_32(__m256i abs_w, __m256i w, __m256i a) {
    const __m256i products = _mm256_maddubs_epi16(abs_w, _mm256_sign_epi8(a, w));
    return _mm256_madd_epi16(products, _mm256_set1_epi16(1));
}

// Each kernel computes the dot products of one weight row with NR activation rows. Per activation row the
// operations and their order do not depend on NR: this is what makes the result batch-invariant.

template <int NR>
void dot_q4_1(const uint8_t *w, const uint8_t *const *act, int64_t n_blocks, float *out) {
    Act32 a[NR];
    __m256 acc[NR];
    float offsets[NR];
    for (int r = 0; r < NR; ++r) {
        a[r] = Act32(act[r], n_blocks);
        acc[r] = _mm256_setzero_ps();
        offsets[r] = 0.0f;
    }
    for (int64_t b = 0; b < n_blocks; ++b, w += q4_1_bytes) {
        const float d = f16_at(w), m = f16_at(w + 2);
        const __m256i u = unpack_nibbles_32(w + 4);
        for (int r = 0; r < NR; ++r) {
            const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(a[r].q + 32 * b));
            const __m256i s = _mm256_madd_epi16(_mm256_maddubs_epi16(u, q), _mm256_set1_epi16(1));
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * a[r].d[b]), _mm256_cvtepi32_ps(s), acc[r]);
            offsets[r] = std::fma(m * a[r].d[b], static_cast<float>(a[r].sum[b]), offsets[r]);
        }
    }
    for (int r = 0; r < NR; ++r) out[r] = horizontal_sum(acc[r]) + offsets[r];
}

// A Q5_0 block's 32 weights as signed bytes (-16..15): nibbles plus a fifth bit from a 32-bit mask, where byte i
// of the expanded mask takes bit i: byte i/8 of the mask, bit i%8.
inline __m256i unpack_q5_0(const uint8_t *block) {
    const __m256i byte_of_bit = _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0);
    const __m256i bit_in_byte = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
    uint32_t high_bits;
    std::memcpy(&high_bits, block + 2, sizeof(high_bits));
    const __m256i spread = _mm256_shuffle_epi8(_mm256_set1_epi32(static_cast<int>(high_bits)), byte_of_bit);
    const __m256i is_set = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit_in_byte), bit_in_byte);
    const __m256i u = _mm256_or_si256(unpack_nibbles_32(block + 6), _mm256_and_si256(is_set, _mm256_set1_epi8(16)));
    return _mm256_sub_epi8(u, _mm256_set1_epi8(16));
}

inline __m256i load_q8_0(const uint8_t *block) {
    return _mm256_loadu_si256(reinterpret_cast<const __m256i *>(block + 2));
}

// The block types with signed weights and one f16 scale first: Q5_0 and Q8_0, told apart by their unpacking.
template <int NR, size_t block_bytes, __m256i (*unpack)(const uint8_t *)>
void dot_signed_blocks(const uint8_t *w, const uint8_t *const *act, int64_t n_blocks, float *out) {
    Act32 a[NR];
    __m256 acc[NR];
    for (int r = 0; r < NR; ++r) {
        a[r] = Act32(act[r], n_blocks);
        acc[r] = _mm256_setzero_ps();
    }
    for (int64_t b = 0; b < n_blocks; ++b, w += block_bytes) {
        const float d = f16_at(w);
        const __m256i wq = unpack(w);
        const __m256i abs_w = _mm256_sign_epi8(wq, wq);
        for (int r = 0; r < NR; ++r) {
            const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(a[r].q + 32 * b));
            acc[r] =
                _mm256_fmadd_ps(_mm256_set1_ps(d * a[r].d[b]), _mm256_cvtepi32_ps(dot_signed_32(abs_w, wq, q)), acc[r]);
        }
    }
    for (int r = 0; r < NR; ++r) out[r] = horizontal_sum(acc[r]);
}

template <int NR>
void dot_q5_0(const uint8_t *w, const uint8_t *const *act, int64_t n_blocks, float *out) {
    dot_signed_blocks<NR, q5_0_bytes, unpack_q5_0>(w, act, n_blocks, out);
}

template <int NR>
void dot_q8_0(const uint8_t *w, const uint8_t *const *act, int64_t n_blocks, float *out) {
    dot_signed_blocks<NR, q8_0_bytes, load_q8_0>(w, act, n_blocks, out);
}


template <int NR>
void dot_q4_k(const uint8_t *w, const uint8_t *const *act, int64_t n_blocks, float *out) {
    const ActBlock256 *a[NR];
    __m256 acc[NR];
    for (int r = 0; r < NR; ++r) {
        a[r] = reinterpret_cast<const ActBlock256 *>(act[r]);
        acc[r] = _mm256_setzero_ps();
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    for (int64_t b = 0; b < n_blocks; ++b, w += q4_k_bytes) {
        const float d = f16_at(w), dmin = f16_at(w + 2);
        alignas(16) uint8_t scales_mins[16];
        q4_k_scales(w + 4, scales_mins, scales_mins + 8);
        const __m128i both = _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(scales_mins + 8)));
        // Each minimum multiplies the sums of its sub-block's two 16-value halves: m0 m0 m1 m1 ... m7 m7.
        const __m256i mins16 = _mm256_set_m128i(_mm_unpackhi_epi16(both, both), _mm_unpacklo_epi16(both, both));
        // Sub-block scales as int16, each broadcast when its 32 weights come.
        alignas(16) int16_t scales16[8];
        _mm_store_si128(reinterpret_cast<__m128i *>(scales16),
                        _mm_cvtepu8_epi16(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(scales_mins))));
        __m256i sums[NR];
        for (int r = 0; r < NR; ++r) sums[r] = _mm256_setzero_si256();
        const uint8_t *qs = w + 16;
        for (int j = 0; j < 4; ++j) {
            const __m256i packed = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(qs + 32 * j));
            const __m256i low = _mm256_and_si256(packed, m4);
            const __m256i high = _mm256_and_si256(_mm256_srli_epi16(packed, 4), m4);
            const __m256i scale_low = _mm256_set1_epi16(scales16[2 * j]);
            const __m256i scale_high = _mm256_set1_epi16(scales16[2 * j + 1]);
            for (int r = 0; r < NR; ++r) {
                const int8_t *q = a[r][b].q + 64 * j;
                const __m256i q0 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q));
                const __m256i q1 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q + 32));
                const __m256i p0 = _mm256_madd_epi16(_mm256_maddubs_epi16(low, q0), scale_low);
                const __m256i p1 = _mm256_madd_epi16(_mm256_maddubs_epi16(high, q1), scale_high);
                sums[r] = _mm256_add_epi32(sums[r], _mm256_add_epi32(p0, p1));
            }
        }
        for (int r = 0; r < NR; ++r) {
            const ActBlock256 &ab = a[r][b];
            const __m256i halves = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(ab.sums16));
            const __m256i offset = _mm256_madd_epi16(halves, mins16);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * ab.d), _mm256_cvtepi32_ps(sums[r]), acc[r]);
            acc[r] = _mm256_fnmadd_ps(_mm256_set1_ps(dmin * ab.d), _mm256_cvtepi32_ps(offset), acc[r]);
        }
    }
    for (int r = 0; r < NR; ++r) out[r] = horizontal_sum(acc[r]);
}

template <int NR>
void dot_q6_k(const uint8_t *w, const uint8_t *const *act, int64_t n_blocks, float *out) {
    const ActBlock256 *a[NR];
    __m256 acc[NR];
    for (int r = 0; r < NR; ++r) {
        a[r] = reinterpret_cast<const ActBlock256 *>(act[r]);
        acc[r] = _mm256_setzero_ps();
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i m2 = _mm256_set1_epi8(0x03);
    __m256i pick_scale[8];  // shuffle masks: byte 2i+1 of a lane <- scale s, byte 2i <- zero
    for (int i = 0; i < 8; ++i) {
        const uint16_t low_lane = static_cast<uint16_t>(0x80 | ((2 * i) << 8));
        const uint16_t high_lane = static_cast<uint16_t>(0x80 | ((2 * i + 1) << 8));
        pick_scale[i] = _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(high_lane)),
                                         _mm_set1_epi16(static_cast<int16_t>(low_lane)));
    }
    for (int64_t b = 0; b < n_blocks; ++b, w += q6_k_bytes) {
        const uint8_t *low_bits = w, *high_bits = w + 128;
        const int8_t *scales = reinterpret_cast<const int8_t *>(w + 192);
        const float d = f16_at(w + 208);
        const __m256i all_scales =
            _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i *>(scales)));
        __m256i sums[NR];
        for (int r = 0; r < NR; ++r) sums[r] = _mm256_setzero_si256();
        for (int half = 0; half < 2; ++half) {
            const __m256i lo_a = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(low_bits + 64 * half));
            const __m256i lo_b = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(low_bits + 64 * half + 32));
            const __m256i hi = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(high_bits + 32 * half));
            // Four runs of 32 weights (values 0..63): low nibble of the first/second 32 bytes, then their high
            // nibbles, each with two bits from `hi`.
            __m256i u[4];
            u[0] = _mm256_or_si256(_mm256_and_si256(lo_a, m4), _mm256_slli_epi16(_mm256_and_si256(hi, m2), 4));
            u[1] = _mm256_or_si256(_mm256_and_si256(lo_b, m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hi, 2), m2), 4));
            u[2] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lo_a, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hi, 4), m2), 4));
            u[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(lo_b, 4), m4),
                                   _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(hi, 6), m2), 4));
            __m256i scale16[4];
            for (int k = 0; k < 4; ++k) {
                // Scale 2k of this half into the high byte of every int16 of the low lane, scale 2k+1 in the high
                // lane, then an arithmetic shift extends the sign.
                scale16[k] = _mm256_srai_epi16(_mm256_shuffle_epi8(all_scales, pick_scale[4 * half + k]), 8);
            }
            for (int r = 0; r < NR; ++r) {
                const int8_t *q = a[r][b].q + 128 * half;
                for (int k = 0; k < 4; ++k) {
                    const __m256i qk = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(q + 32 * k));
                    sums[r] = _mm256_add_epi32(sums[r], _mm256_madd_epi16(_mm256_maddubs_epi16(u[k], qk), scale16[k]));
                }
            }
        }
        // Weights are stored as value + 32: take 32 times the scaled sums of every 16 activations back out.
        const __m256i scales16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(scales)));
        for (int r = 0; r < NR; ++r) {
            const ActBlock256 &ab = a[r][b];
            const __m256i halves = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(ab.sums16));
            const __m256i offset = _mm256_slli_epi32(_mm256_madd_epi16(halves, scales16), 5);
            acc[r] = _mm256_fmadd_ps(_mm256_set1_ps(d * ab.d), _mm256_cvtepi32_ps(_mm256_sub_epi32(sums[r], offset)),
                                     acc[r]);
        }
    }
    for (int r = 0; r < NR; ++r) out[r] = horizontal_sum(acc[r]);
}

// Weights stream from memory once per pass: asking for a row a few rows ahead keeps more loads in flight than the
// hardware prefetcher alone does on the large output matrix. (A prefetch past the end of the weights is harmless.)
constexpr int64_t prefetch_rows = 4;

inline void prefetch_line(const uint8_t *p) {
    _mm_prefetch(reinterpret_cast<const char *>(p), _MM_HINT_T0);
}

inline void prefetch_row(const uint8_t *row, size_t row_bytes) {
    for (size_t off = 0; off < row_bytes; off += 64) prefetch_line(row + off);
}

// The packed kernels ask for their weights this far ahead when they carry packed_prefetch_min_rows rows or more, a few
// cache lines per sub-block, spread through the arithmetic. Measured on Zen 4 under KVM (1 thread, an 82 MiB Q4_K
// matrix streamed from memory): without it the hardware prefetcher does not run ahead of the stream, the memory time
// and the arithmetic add up, and 8 rows took 11.8 ms (100 GMAC/s) against 7.3 ms (161, the in-cache rate) with it;
// 4 rows 6.7 -> 5.4 ms, 2 rows 4.5 -> 4.1. One row streams at full speed from the misses alone, and the prefetches
// slowed it (2.9 -> 3.8 ms). Issued all at once per block instead of spread, they made every row count slower.
// From three rows: in the whole 1.5B pass (adadecode-microbench, 2 threads, Zen 4 under KVM) the two-row kernel was
// as fast or faster without them (2 rows 1.12 -> 1.05 of one row in processes whose one-row pass streamed at ~34
// GB/s; no change at ~50), and the three-row kernel needed them (3 rows 1.14 -> 1.43 without, at ~50 GB/s).
//
// On Intel the one-row pass needs them too. Intel Xeon (Emerald Rapids, family 6 model 207) under KVM, whole 1.5B
// pass (adadecode-microbench, 2 threads, best of 5 alternating processes), milliseconds for 1 / 2 / 3 rows, from
// three rows -> from one: AVX-512 VNNI 52.6 / 61.4 / 44.0 -> 42.1 / 46.9 / 50.9, AVX2 65.0 / 72.5 / 57.5 -> 50.7 /
// 56.4 / 58.4; without them one and two rows were slower than three. Decoding 1.35x as fast in standard mode, 1.41x
// in adadecode mode (bench/results/roofline/intel-xeon-2026-12-06/).
constexpr size_t packed_prefetch_distance = 2368;

// Intel's cores and AMD's want some kernel choices made differently (below).
bool cpu_is_intel() {
    __builtin_cpu_init();
    return __builtin_cpu_is("intel");
}

// From this many activation rows the packed kernels prefetch (see above): 1 on Intel, 3 elsewhere.
// ADADECODE_QMATMUL_PREFETCH_ROWS=N (1-9) sets it, to measure one choice against another.
int choose_packed_prefetch_min_rows() {
    if (const char *env = std::getenv("ADADECODE_QMATMUL_PREFETCH_ROWS"); env && *env) {
        const int rows = std::atoi(env);
        if (rows >= 1 && rows <= 9)
            return rows;
        std::fprintf(stderr, "adadecode: ADADECODE_QMATMUL_PREFETCH_ROWS='%s' is not 1-9; using the CPU's default\n",
                     env);
    }
    return cpu_is_intel() ? 1 : 3;
}
const int packed_prefetch_min_rows = choose_packed_prefetch_min_rows();

// How the AVX-512 VNNI Q4_K kernel multiplies a sub-block's sums by the weight row's scale: vpmulld on the sums
// (Zen 4), or vpdpwssd on each half's (Intel), where vpmulld is two uops on the port vpdpbusd needs. The integer sums
// are the same either way. Intel Xeon (Emerald Rapids) under KVM, best of 6 alternating processes: in cache
// (adadecode-kernelbench q4_k 1 1536 8960 1) 4 rows 0.422 -> 0.318 ms, 8 rows 0.649 -> 0.566; whole 1.5B passes
// (adadecode-microbench, 2 threads) of 5-8 rows 2-6 % cheaper; prompt lookup decoding 1.005-1.11x as fast, with exits
// 1.09-1.10x (bench/results/roofline/intel-xeon-2026-12-07/).
// ADADECODE_QMATMUL_Q4K_SCALE=dpwssd|mulld sets it, to measure one against the other.
bool choose_q4_k_scale_by_dpwssd() {
    if (const char *env = std::getenv("ADADECODE_QMATMUL_Q4K_SCALE"); env && *env) {
        if (std::strcmp(env, "dpwssd") == 0 || std::strcmp(env, "mulld") == 0)
            return std::strcmp(env, "dpwssd") == 0;
        std::fprintf(stderr,
                     "adadecode: ADADECODE_QMATMUL_Q4K_SCALE='%s' is not dpwssd or mulld; using the CPU's default\n",
                     env);
    }
    return cpu_is_intel();
}
const bool q4_k_scale_by_dpwssd = choose_q4_k_scale_by_dpwssd();

// Whether the VNNI Q4_K kernels (AVX-512 and AVX-VNNI) take the weights' high nibbles with GFNI (one instruction, see
// high_nibbles_gfni) rather than a shift and a mask (two, on the ports vpdpbusd needs); the same bytes either way. On
// Intel CPUs with GFNI. Intel Xeon (Emerald Rapids) under KVM, AVX-512 VNNI: in cache (adadecode-kernelbench q4_k 1
// 1536 8960 1, best of 10 alternating processes) 6-9 rows 4-9 % faster (8 rows 0.543 -> 0.494 ms), 1-4 rows the same
// (bound by the cache's bandwidth there); whole 1.5B passes (median of 10 processes) 8 rows 1.586 -> 1.551 of one row,
// 4 rows the same; decoding and prefill within the VM's spread; the AVX-VNNI family the same in cache
// (bench/results/roofline/gfni-intel-2026-12-07/). Off elsewhere: on an AMD EPYC Zen 4, in L2 at 4 / 8 rows, the shift
// ran 145-167 / 164-166 GMAC/s and GFNI 155-157 / 160-161, no better
// (bench/results/roofline/amd-epyc-zen4-2026-12-07/). ADADECODE_QMATMUL_GFNI=0|1 sets it, to measure one against the
// other; 1 on a CPU without GFNI is refused with a message.
bool choose_q4_k_high_nibbles_by_gfni() {
    __builtin_cpu_init();
    const bool has_gfni = __builtin_cpu_supports("gfni");
    if (const char *env = std::getenv("ADADECODE_QMATMUL_GFNI"); env && *env) {
        if (std::strcmp(env, "0") == 0)
            return false;
        if (std::strcmp(env, "1") == 0 && has_gfni)
            return true;
        std::fprintf(stderr, "adadecode: ADADECODE_QMATMUL_GFNI='%s' is not 0 or 1%s; using the CPU's default\n", env,
                     has_gfni ? "" : " (and this CPU has no GFNI)");
    }
    return has_gfni && cpu_is_intel();
}
const bool q4_k_high_nibbles_by_gfni = choose_q4_k_high_nibbles_by_gfni();
// GFNI's affine transform by this bit matrix (one row per output bit, bit 7's first) is x >> 4 in each byte.
constexpr long long gfni_shift_right_4 = 0x1020408000000000LL;

// A tile of weight rows against one group of activation rows, in one call: the kernel is inlined into the loop, so
// its constants are set up once per tile, not once per weight row (rows of 1,536 values are only 6 K-blocks).
template <int NR, void (*kernel)(const uint8_t *, const uint8_t *const *, int64_t, float *)>
void rows_avx2(const uint8_t *w, size_t row_bytes, int64_t n_rows, const uint8_t *const *act, int64_t n_blocks,
               float *out) {
    for (int64_t i = 0; i < n_rows; ++i) {
        prefetch_row(w + (i + prefetch_rows) * row_bytes, row_bytes);
        float row_out[NR];
        kernel(w + i * row_bytes, act, n_blocks, row_out);
        place_weight_row<NR>(row_out, i, out);
    }
}

#pragma GCC pop_options

// AVX-512 (BW): 64 weights per instruction halve the per-activation-row work, which is what a batched pass pays per
// extra row. Same arithmetic as the AVX2 kernels in integers; the float accumulation differs, so a process uses one
// family throughout (chosen once at start-up).
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")

inline float horizontal_sum_512(__m512 v) {
    return horizontal_sum(
        _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}

inline __m128 f16_pair(const uint8_t *first, const uint8_t *second) {
    uint16_t h0, h1;
    std::memcpy(&h0, first, 2);
    std::memcpy(&h1, second, 2);
    return _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(h0 | (static_cast<uint32_t>(h1) << 16))));
}

// Lanes 0..7: weight scale 0 times activation scale of block b; lanes 8..15: the same for block b+1.
inline __m512 pair_scales(__m128 weight_scales, const float *act_scales, __m128 *product) {
    *product = _mm_mul_ps(weight_scales, _mm_castpd_ps(_mm_load_sd(reinterpret_cast<const double *>(act_scales))));
    const __m512i pair_index = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    return _mm512_permutexvar_ps(pair_index, _mm512_castps128_ps512(*product));
}

inline __m512i join(__m256i low, __m256i high) {
    return _mm512_inserti64x4(_mm512_castsi256_si512(low), high, 1);
}

// The sums of the 16 lanes of each of v[0..15], in order: four rounds of adding pairs of registers' halves.
inline __m512i sums_of_16(const __m512i *v) {
    __m512i pairs[8], quads[4];
    // Lanes 4k..4k+3 of pairs[j]: v[2j], v[2j+1], v[2j], v[2j+1] (each a sum of two of the 128-bit lane's values).
    for (int j = 0; j < 8; ++j) {
        pairs[j] = _mm512_add_epi32(_mm512_unpacklo_epi32(v[2 * j], v[2 * j + 1]),
                                    _mm512_unpackhi_epi32(v[2 * j], v[2 * j + 1]));
    }
    // Lanes 4k..4k+3 of quads[m]: v[4m..4m+3], each summed over the 128-bit lane k.
    for (int m = 0; m < 4; ++m) {
        quads[m] = _mm512_add_epi32(_mm512_unpacklo_epi64(pairs[2 * m], pairs[2 * m + 1]),
                                    _mm512_unpackhi_epi64(pairs[2 * m], pairs[2 * m + 1]));
    }
    // Across the four 128-bit lanes: halves, then quarters.
    const auto halves = [](__m512i a, __m512i b) {
        return _mm512_add_epi32(_mm512_shuffle_i32x4(a, b, 0x88), _mm512_shuffle_i32x4(a, b, 0xDD));
    };
    return halves(halves(quads[0], quads[1]), halves(quads[2], quads[3]));
}

// 16 floats -> 16 int8 at out, as quantize_32 rounds and saturates them; returns them as int32 for their sums.
inline __m512i quantize_16(const float *v, __m512 inverse_scale, int8_t *out) {
    const __m512i q = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_loadu_ps(v), inverse_scale),
                                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    _mm_storeu_si128(reinterpret_cast<__m128i *>(out), _mm512_cvtsepi32_epi8(q));
    return q;
}

// Lane 2i of sums plus lane 2i + 1, in the low 32 bits of 64-bit lane i.
inline __m512i pair_sums(__m512i sums) {
    return _mm512_add_epi32(sums, _mm512_srli_epi64(sums, 32));
}

// quantize_row_32_avx2 with 16 values per register, eight blocks at a time for their sums (see
// quantize_row_256_avx512).
void quantize_row_32_avx512(const float *x, int64_t n_blocks, uint8_t *out) {
    int8_t *q = reinterpret_cast<int8_t *>(out);
    float *scales = reinterpret_cast<float *>(out + 32 * n_blocks);
    int32_t *sums = reinterpret_cast<int32_t *>(out + 36 * n_blocks);
    for (int64_t first = 0; first < n_blocks; first += 8) {
        const int blocks = static_cast<int>(std::min<int64_t>(8, n_blocks - first));
        __m512i halves[16] = {};
        for (int k = 0; k < blocks; ++k) {
            const int64_t b = first + k;
            const __m512 low = _mm512_loadu_ps(x + 32 * b), high = _mm512_loadu_ps(x + 32 * b + 16);
            const float d = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(low), _mm512_abs_ps(high))) / 127.0f;
            const __m512 id = _mm512_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
            for (int h = 0; h < 2; ++h) halves[2 * k + h] = quantize_16(x + 32 * b + 16 * h, id, q + 32 * b + 16 * h);
            scales[b] = d;
        }
        const __m512i half_sums = sums_of_16(halves);
        alignas(32) int32_t block_sums[8];
        _mm256_store_si256(reinterpret_cast<__m256i *>(block_sums), _mm512_cvtepi64_epi32(pair_sums(half_sums)));
        std::memcpy(sums + first, block_sums, sizeof(int32_t) * blocks);
    }
}

// quantize_row_256_avx2 with 16 values per register: the same products, rounding and saturation, so the same bytes
// and sums (test_qmatmul's checksums are shared by every x86 family). In a 4-row pass of the 1.5B the AVX2 quantizer
// took 3 % of the time.
void quantize_row_256_avx512(const float *x, int64_t n_blocks, ActBlock256 *out) {
    for (int64_t b = 0; b < n_blocks; ++b) {
        const float *v = x + 256 * b;
        __m512 m = _mm512_setzero_ps();
        for (int i = 0; i < 256; i += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(v + i)));
        const float d = _mm512_reduce_max_ps(m) / 127.0f;
        const __m512 id = _mm512_set1_ps(d > 0.0f ? 1.0f / d : 0.0f);
        __m512i q[16];
        for (int k = 0; k < 16; ++k) q[k] = quantize_16(v + 16 * k, id, out[b].q + 16 * k);
        const __m512i sums = sums_of_16(q);
        _mm256_storeu_si256(reinterpret_cast<__m256i *>(out[b].sums16), _mm512_cvtepi32_epi16(sums));
        _mm_storeu_si128(reinterpret_cast<__m128i *>(out[b].sums32), _mm512_cvtepi64_epi16(pair_sums(sums)));
        out[b].d = d;
    }
}

#define QM_NAME(name) name##_512
#define QM_MADD_ACC(acc, pairs16, scales16) _mm512_add_epi32(acc, _mm512_madd_epi16(pairs16, scales16))
#define QM_DOT_U8S8(u8, s8) _mm512_madd_epi16(_mm512_maddubs_epi16(u8, s8), _mm512_set1_epi16(1))
#define QM_HAS_DPBUSD 0
#include "qmatmul_avx512.inc"
#undef QM_HAS_DPBUSD
#undef QM_NAME
#undef QM_MADD_ACC
#undef QM_DOT_U8S8

#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")

#define QM_NAME(name) name##_vnni
#define QM_MADD_ACC(acc, pairs16, scales16) _mm512_dpwssd_epi32(acc, pairs16, scales16)
#define QM_DOT_U8S8(u8, s8) _mm512_dpbusd_epi32(_mm512_setzero_si512(), u8, s8)
#define QM_HAS_DPBUSD 1
#include "qmatmul_avx512.inc"
#undef QM_HAS_DPBUSD
#undef QM_NAME
#undef QM_MADD_ACC
#undef QM_DOT_U8S8

#pragma GCC pop_options

// The packed layouts on AVX2: each 64-byte register of a 16-row group is taken as two halves of 8 rows (rows 0-7,
// then 8-15). The kernels work on both halves side by side, so that every cache line is used whole the one time it
// comes from memory and each activation broadcast serves 16 rows: run one half through every block and then the
// other, and the one-row pass over the 1.5B model's matrices streamed at about 2/3 of the speed (1 thread, 1536 x
// 65536 from memory: Q4_K 2.95 -> 1.98 ms, Q6_K 5.3 -> 3.1 ms), and over the 0.5B's (896 x 65536) at about 1/2 to
// 2/3 (Q5_0 2.8-4.6 -> 1.7-2.0 ms, Q8_0 3.7-5.2 -> 2.4-2.5 ms). Per 32-bit lane (one output) the integer sums are
// exact and equal to the AVX-512 kernels' (partial sums in int16 that no value can saturate, widened to int32), and
// the float operations are the same, in the same order: the results are bitwise those of the AVX-512
// packed kernels, and per activation row independent of NR. Four activation rows per call fit in 16 registers (the
// per-block sums of both halves spill at four, which costs less than a second pass over the block).
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")

// Both halves of a packed group's outputs (acc[half][r], lane i: weight row 8 half + i times activation row r) in the
// tile kernels' order, one store each.
template <int NR>
void store_packed_avx2(const __m256 (&acc)[2][NR], float *out) {
    for (int half = 0; half < 2; ++half) {
        for (int r = 0; r < NR; ++r) _mm256_storeu_ps(out + r * weight_tile + 8 * half, acc[half][r]);
    }
}

// 8 f16 values (one half of a packed group's 16 row scales) as f32.
inline __m256 f16x8(const uint8_t *p) {
    return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i *>(p)));
}

// v, computed here: integer additions are associative, and GCC 12 turned a running sum over 8 registers into a
// tree over all 32 products of a Q8_0 block, which for one row spilled half of them to the stack.
inline __m256i in_register(__m256i v) {
    asm("" : "+x"(v));
    return v;
}

inline __m256i broadcast4(const int8_t *q) {
    int32_t four;
    std::memcpy(&four, q, 4);
    return _mm256_set1_epi32(four);
}

// Bit i of the 32-bit word `half` of a Q5_0 mask (see q5_0_packed_bytes) -> byte i all ones (0xFF) or zero, for the 32
// bytes of a register. The mask comes in every 64-bit lane, loaded once for both halves.
inline __m256i expand_bits(__m256i mask64, int half) {
    const int64_t step = 0x0101010101010101, first = 4 * half * step;
    const __m256i byte_of_bit = _mm256_set_epi64x(first + 3 * step, first + 2 * step, first + step, first);
    const __m256i bit_in_byte = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ULL));
    return _mm256_cmpeq_epi8(_mm256_and_si256(_mm256_shuffle_epi8(mask64, byte_of_bit), bit_in_byte), bit_in_byte);
}

// From this many activation rows the AVX2 K-quant kernels sweep a block one half of the 16-row group at a time (see
// packed_q4_k_avx2): below it both halves' accumulators fit AVX2's 16 registers. A threshold of its own, measured
// (kernels.md in bench/results/roofline/avx2-no-spills-2026-12-06/).
constexpr int avx2_by_half_min_rows = 3;


// One half (8 weight rows) of a packed Q6_K sub-block as four registers of unsigned 6-bit weights, in the order the
// activations' four 4-byte groups meet them.
inline void q6_k_weights_avx2(const uint8_t *sub_data, int half, __m256i v[4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), top = _mm256_set1_epi8(0x30);
    const __m256i low0 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(sub_data + 32 * half));
    const __m256i low1 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(sub_data + 64 + 32 * half));
    const __m256i high = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(sub_data + 128 + 32 * half));
    v[0] = _mm256_or_si256(_mm256_and_si256(low0, m4), _mm256_and_si256(_mm256_slli_epi16(high, 4), top));
    v[1] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(low0, 4), m4),
                           _mm256_and_si256(_mm256_slli_epi16(high, 2), top));
    v[2] = _mm256_or_si256(_mm256_and_si256(low1, m4), _mm256_and_si256(high, top));
    v[3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(low1, 4), m4),
                           _mm256_and_si256(_mm256_srli_epi16(high, 2), top));
}


// Byte shuffles that put a sub-block's int16 scale in both halves of its row's 32-bit lane: from lanes holding
// (scale of sub-block 2 pair, scale of 2 pair + 1), the first (s = 0) or the second (s = 1).
inline __m256i q6_k_pick_avx2(int s) {
    return s == 0 ? _mm256_setr_epi32(0x01000100, 0x05040504, 0x09080908, 0x0D0C0D0C, 0x01000100, 0x05040504,
                                      0x09080908, 0x0D0C0D0C)
                  : _mm256_setr_epi32(0x03020302, 0x07060706, 0x0B0A0B0A, 0x0F0E0F0E, 0x03020302, 0x07060706,
                                      0x0B0A0B0A, 0x0F0E0F0E);
}

// int16 lanes 2i, 2i+1: row 8 half + i's scales of sub-blocks 2 pair and 2 pair + 1.
inline __m256i q6_k_scale_pairs_avx2(const uint8_t *pair_data, int half) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i *>(pair_data + 16 * half)));
}

// Adds a block's integer sum for one half of the group to acc: (sums - 32 x offsets) x d x the activations' scale.
inline __m256 q6_k_accumulate_avx2(__m256 acc, __m256i sums, __m256i offsets, const uint8_t *w, int half,
                                   float act_scale) {
    const __m256i total = _mm256_sub_epi32(sums, _mm256_slli_epi32(offsets, 5));
    return _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(f16x8(w + 16 * half), _mm256_set1_ps(act_scale)),
                           acc);
}

#define QM2_NAME(name) name##_avx2
#define QM2_HAS_DPBUSD 0
#include "qmatmul_avx2_kquants.inc"
#undef QM2_HAS_DPBUSD
#undef QM2_NAME

// Both halves of a block in the same pass, as packed_q4_k_avx2. Pair sums of two registers add up in int16 before
// one widening multiply-add: at most 8 products of 31 x 127 (31,496) per int16 lane, so none saturates, and the
// int32 sums are those of widening every register on its own.
template <int NR, bool fifth_bits>
void packed_nibbles_32_avx2(const uint8_t *w, const uint8_t *const *act, int64_t n_blocks, float *out) {
    constexpr size_t block_bytes = fifth_bits ? q5_0_packed_bytes : q4_1_packed_bytes;
    constexpr size_t qs_offset = fifth_bits ? q5_packed_qs : q4_1_packed_qs;
    Act32 a[NR];
    __m256 acc[2][NR];
    for (int r = 0; r < NR; ++r) {
        a[r] = Act32(act[r], n_blocks);
        acc[0][r] = acc[1][r] = _mm256_setzero_ps();
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F), sixteen = _mm256_set1_epi8(16), ones16 = _mm256_set1_epi16(1);
    for (int64_t b = 0; b < n_blocks; ++b, w += block_bytes) {
        if (NR >= packed_prefetch_min_rows)
            prefetch_row(w + packed_prefetch_distance, block_bytes);
        __m256i dots[2][NR], pairs[2][NR];
        for (int t = 0; t < 4; ++t) {
            __m256i low[2], high[2], low_mask = _mm256_setzero_si256(), high_mask = _mm256_setzero_si256();
            if constexpr (fifth_bits) {
                const uint8_t *masks = w + q5_packed_masks;
                low_mask = _mm256_broadcastq_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(masks + 8 * t)));
                high_mask =
                    _mm256_broadcastq_epi64(_mm_loadl_epi64(reinterpret_cast<const __m128i *>(masks + 8 * t + 32)));
            }
            for (int half = 0; half < 2; ++half) {
                const __m256i packed =
                    _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + qs_offset + 64 * t + 32 * half));
                low[half] = _mm256_and_si256(packed, m4);
                high[half] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), m4);
                if constexpr (fifth_bits) {
                    low[half] = _mm256_add_epi8(low[half], _mm256_and_si256(expand_bits(low_mask, half), sixteen));
                    high[half] = _mm256_add_epi8(high[half], _mm256_and_si256(expand_bits(high_mask, half), sixteen));
                }
            }
            for (int r = 0; r < NR; ++r) {
                const __m256i q_low = broadcast4(a[r].q + 32 * b + 4 * t);
                const __m256i q_high = broadcast4(a[r].q + 32 * b + 16 + 4 * t);
                for (int half = 0; half < 2; ++half) {
                    const __m256i x = _mm256_add_epi16(_mm256_maddubs_epi16(low[half], q_low),
                                                       _mm256_maddubs_epi16(high[half], q_high));
                    if (t % 2 == 0) {
                        pairs[half][r] = x;
                    } else {
                        const __m256i x32 = _mm256_madd_epi16(_mm256_add_epi16(pairs[half][r], x), ones16);
                        dots[half][r] = t == 1 ? x32 : _mm256_add_epi32(dots[half][r], x32);
                    }
                }
            }
        }
        for (int half = 0; half < 2; ++half) {
            const __m256 d = f16x8(w + 16 * half);
            __m256 mins = _mm256_setzero_ps();
            if constexpr (!fifth_bits)
                mins = f16x8(w + q4_1_packed_mins + 16 * half);
            for (int r = 0; r < NR; ++r) {
                const __m256 scale = _mm256_mul_ps(d, _mm256_set1_ps(a[r].d[b]));
                if constexpr (fifth_bits) {
                    const __m256i total = _mm256_sub_epi32(dots[half][r], _mm256_set1_epi32(16 * a[r].sum[b]));
                    acc[half][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), scale, acc[half][r]);
                } else {
                    acc[half][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots[half][r]), scale, acc[half][r]);
                    acc[half][r] = _mm256_fmadd_ps(
                        mins, _mm256_set1_ps(a[r].d[b] * static_cast<float>(a[r].sum[b])), acc[half][r]);
                }
            }
        }
    }
    store_packed_avx2<NR>(acc, out);
}

template <int NR>
void packed_q5_0_avx2(const uint8_t *w, size_t, int64_t, const uint8_t *const *act, int64_t n_blocks, float *out) {
    packed_nibbles_32_avx2<NR, true>(w, act, n_blocks, out);
}

template <int NR>
void packed_q4_1_avx2(const uint8_t *w, size_t, int64_t, const uint8_t *const *act, int64_t n_blocks, float *out) {
    packed_nibbles_32_avx2<NR, false>(w, act, n_blocks, out);
}

// Both halves of a block in the same pass, as packed_q4_k_avx2. Unsigned weights up to 255: their nibbles go
// separately so that the int16 pair sums cannot saturate, and those of all 8 registers add up in int16 (at most 16
// products of 15 x 127, 30,480) before one widening multiply-add each, the high ones weighted 16: the same int32
// sums as widening every register on its own.
template <int NR>
void packed_q8_0_avx2(const uint8_t *w, size_t, int64_t, const uint8_t *const *act, int64_t n_blocks, float *out) {
    Act32 a[NR];
    __m256 acc[2][NR];
    for (int r = 0; r < NR; ++r) {
        a[r] = Act32(act[r], n_blocks);
        acc[0][r] = acc[1][r] = _mm256_setzero_ps();
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    const __m256i ones16 = _mm256_set1_epi16(1), sixteens16 = _mm256_set1_epi16(16);
    for (int64_t b = 0; b < n_blocks; ++b, w += q8_0_packed_bytes) {
        if (NR >= packed_prefetch_min_rows)
            prefetch_row(w + packed_prefetch_distance, q8_0_packed_bytes);
        __m256i lows[2][NR], highs[2][NR];
        for (int t = 0; t < 8; ++t) {
            const __m256i u0 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + q8_packed_qs + 64 * t));
            const __m256i u1 = _mm256_loadu_si256(reinterpret_cast<const __m256i *>(w + q8_packed_qs + 64 * t + 32));
            const __m256i low[2] = {_mm256_and_si256(u0, m4), _mm256_and_si256(u1, m4)};
            const __m256i high[2] = {_mm256_and_si256(_mm256_srli_epi16(u0, 4), m4),
                                     _mm256_and_si256(_mm256_srli_epi16(u1, 4), m4)};
            for (int r = 0; r < NR; ++r) {
                const __m256i q = broadcast4(a[r].q + 32 * b + 4 * t);
                for (int half = 0; half < 2; ++half) {
                    const __m256i x_low = _mm256_maddubs_epi16(low[half], q);
                    const __m256i x_high = _mm256_maddubs_epi16(high[half], q);
                    lows[half][r] = t == 0 ? x_low : in_register(_mm256_add_epi16(lows[half][r], x_low));
                    highs[half][r] = t == 0 ? x_high : in_register(_mm256_add_epi16(highs[half][r], x_high));
                }
            }
        }
        for (int half = 0; half < 2; ++half) {
            const __m256 d = f16x8(w + 16 * half);
            for (int r = 0; r < NR; ++r) {
                const __m256i dots = _mm256_add_epi32(_mm256_madd_epi16(lows[half][r], ones16),
                                                      _mm256_madd_epi16(highs[half][r], sixteens16));
                const __m256i total = _mm256_sub_epi32(dots, _mm256_set1_epi32(128 * a[r].sum[b]));
                acc[half][r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(total), _mm256_mul_ps(d, _mm256_set1_ps(a[r].d[b])),
                                               acc[half][r]);
            }
        }
    }
    store_packed_avx2<NR>(acc, out);
}

#pragma GCC pop_options

// AVX2 with AVX-VNNI (Intel since Alder Lake, AMD since Zen 5; most laptops with no AVX-512): the K-quant kernels with
// vpdpbusd on 256-bit registers. The other types keep the AVX2 kernels.
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c,avxvnni")

#define QM2_NAME(name) name##_avxvnni
#define QM2_HAS_DPBUSD 1
#include "qmatmul_avx2_kquants.inc"
#undef QM2_HAS_DPBUSD
#undef QM2_NAME

#pragma GCC pop_options

#define ADADECODE_GROUP4(kernel) \
    {rows_avx2<1, kernel<1>>, rows_avx2<2, kernel<2>>, rows_avx2<3, kernel<3>>, rows_avx2<4, kernel<4>>}
#define ADADECODE_GROUP8(rows, kernel)                                               \
    {rows<1, kernel<1>>, rows<2, kernel<2>>, rows<3, kernel<3>>, rows<4, kernel<4>>, \
     rows<5, kernel<5>>, rows<6, kernel<6>>, rows<7, kernel<7>>, rows<8, kernel<8>>}

#define ADADECODE_AVX2_FILE_KERNELS                                         \
    {GGML_TYPE_Q4_1, q4_1_bytes, 32, 4, ADADECODE_GROUP4(dot_q4_1)},        \
        {GGML_TYPE_Q5_0, q5_0_bytes, 32, 4, ADADECODE_GROUP4(dot_q5_0)},    \
        {GGML_TYPE_Q8_0, q8_0_bytes, 32, 4, ADADECODE_GROUP4(dot_q8_0)},    \
        {GGML_TYPE_Q4_K, q4_k_bytes, 256, 4, ADADECODE_GROUP4(dot_q4_k)}, { \
        GGML_TYPE_Q6_K, q6_k_bytes, 256, 4, ADADECODE_GROUP4(dot_q6_k)      \
    }
const TypeKernels avx2_kernels[] = {ADADECODE_AVX2_FILE_KERNELS};
// The AVX-VNNI family's file layouts are AVX2's: its own table names the family (see chosen_table).
const TypeKernels avx_vnni_kernels[] = {ADADECODE_AVX2_FILE_KERNELS};
#undef ADADECODE_AVX2_FILE_KERNELS

const TypeKernels avx512_kernels[] = {
    {GGML_TYPE_Q4_1, q4_1_bytes, 32, 8, ADADECODE_GROUP8(rows_512, dot_q4_1_512), true},
    {GGML_TYPE_Q5_0, q5_0_bytes, 32, 8, ADADECODE_GROUP8(rows_512, dot_q5_0_512), true},
    {GGML_TYPE_Q8_0, q8_0_bytes, 32, 8, ADADECODE_GROUP8(rows_512, dot_q8_0_512), true},
    {GGML_TYPE_Q4_K, q4_k_bytes, 256, 8, ADADECODE_GROUP8(rows_512, dot_q4_k_512)},
    {GGML_TYPE_Q6_K, q6_k_bytes, 256, 8, ADADECODE_GROUP8(rows_512, dot_q6_k_512)},
};

const TypeKernels avx512_vnni_kernels[] = {
    {GGML_TYPE_Q4_1, q4_1_bytes, 32, 8, ADADECODE_GROUP8(rows_vnni, dot_q4_1_vnni), true},
    {GGML_TYPE_Q5_0, q5_0_bytes, 32, 8, ADADECODE_GROUP8(rows_vnni, dot_q5_0_vnni), true},
    {GGML_TYPE_Q8_0, q8_0_bytes, 32, 8, ADADECODE_GROUP8(rows_vnni, dot_q8_0_vnni), true},
    {GGML_TYPE_Q4_K, q4_k_bytes, 256, 8, ADADECODE_GROUP8(rows_vnni, dot_q4_k_vnni)},
    {GGML_TYPE_Q6_K, q6_k_bytes, 256, 8, ADADECODE_GROUP8(rows_vnni, dot_q6_k_vnni)},
};

#undef ADADECODE_GROUP4
#undef ADADECODE_GROUP8

// Packed weights: each call takes one 16-row group (a tile), laid out as rows of block_bytes / packed_rows per block.
static_assert(weight_tile == packed_rows, "a tile of weight rows must be one packed group");
#define ADADECODE_PACKED8(kernel) \
    {kernel<1>, kernel<2>, kernel<3>, kernel<4>, kernel<5>, kernel<6>, kernel<7>, kernel<8>}
const TypeKernels packed_tables_512[] = {
    {GGML_TYPE_Q4_K, q4_k_packed_bytes, 256, 8, ADADECODE_PACKED8(packed_q4_k_512)},
    {GGML_TYPE_Q6_K, q6_k_packed_bytes, 256, 8, ADADECODE_PACKED8(packed_q6_k_512)},
    {GGML_TYPE_Q5_0, q5_0_packed_bytes, 32, 8, ADADECODE_PACKED8(packed_q5_0_512)},
    {GGML_TYPE_Q8_0, q8_0_packed_bytes, 32, 8, ADADECODE_PACKED8(packed_q8_0_512)},
    {GGML_TYPE_Q4_1, q4_1_packed_bytes, 32, 8, ADADECODE_PACKED8(packed_q4_1_512)},
};
#define ADADECODE_PACKED4(kernel) {kernel<1>, kernel<2>, kernel<3>, kernel<4>}
const TypeKernels packed_tables_avx2[] = {
    {GGML_TYPE_Q4_K, q4_k_packed_bytes, 256, 4, ADADECODE_PACKED4(packed_q4_k_avx2)},
    {GGML_TYPE_Q6_K, q6_k_packed_bytes, 256, 4, ADADECODE_PACKED4(packed_q6_k_avx2)},
    {GGML_TYPE_Q5_0, q5_0_packed_bytes, 32, 4, ADADECODE_PACKED4(packed_q5_0_avx2)},
    {GGML_TYPE_Q8_0, q8_0_packed_bytes, 32, 4, ADADECODE_PACKED4(packed_q8_0_avx2)},
    {GGML_TYPE_Q4_1, q4_1_packed_bytes, 32, 4, ADADECODE_PACKED4(packed_q4_1_avx2)},
};
// One and two rows keep the AVX2 kernels: end to end, standard decoding with the AVX-VNNI ones was 0.95x (8 of 9
// prompts slower; bench/results/roofline/intel-xeon-2026-12-06/ab-families.md), where in cache from two rows they
// ran 1.05-1.34x.
const TypeKernels packed_tables_avxvnni[] = {
    {GGML_TYPE_Q4_K,
     q4_k_packed_bytes,
     256,
     4,
     {packed_q4_k_avx2<1>, packed_q4_k_avx2<2>, packed_q4_k_avxvnni<3>, packed_q4_k_avxvnni<4>}},
    {GGML_TYPE_Q6_K,
     q6_k_packed_bytes,
     256,
     4,
     {packed_q6_k_avx2<1>, packed_q6_k_avx2<2>, packed_q6_k_avxvnni<3>, packed_q6_k_avxvnni<4>}},
    {GGML_TYPE_Q5_0, q5_0_packed_bytes, 32, 4, ADADECODE_PACKED4(packed_q5_0_avx2)},
    {GGML_TYPE_Q8_0, q8_0_packed_bytes, 32, 4, ADADECODE_PACKED4(packed_q8_0_avx2)},
    {GGML_TYPE_Q4_1, q4_1_packed_bytes, 32, 4, ADADECODE_PACKED4(packed_q4_1_avx2)},
};
#undef ADADECODE_PACKED4
const TypeKernels packed_tables_vnni[] = {
    {GGML_TYPE_Q4_K, q4_k_packed_bytes, 256, 8, ADADECODE_PACKED8(packed_q4_k_vnni)},
    {GGML_TYPE_Q6_K, q6_k_packed_bytes, 256, 8, ADADECODE_PACKED8(packed_q6_k_vnni)},
    {GGML_TYPE_Q5_0, q5_0_packed_bytes, 32, 8, ADADECODE_PACKED8(packed_q5_0_vnni)},
    {GGML_TYPE_Q8_0, q8_0_packed_bytes, 32, 8, ADADECODE_PACKED8(packed_q8_0_vnni)},
    {GGML_TYPE_Q4_1, q4_1_packed_bytes, 32, 8, ADADECODE_PACKED8(packed_q4_1_vnni)},
};
#undef ADADECODE_PACKED8
static_assert(std::size(avx2_kernels) == n_kernel_types && std::size(avx_vnni_kernels) == n_kernel_types &&
                  std::size(avx512_kernels) == n_kernel_types && std::size(avx512_vnni_kernels) == n_kernel_types &&
                  std::size(packed_tables_512) == n_kernel_types && std::size(packed_tables_avx2) == n_kernel_types &&
                  std::size(packed_tables_avxvnni) == n_kernel_types && std::size(packed_tables_vnni) == n_kernel_types,
              "every family has a kernel for every type");

// The kernel family, chosen once per process: ADADECODE_QMATMUL=0 (off: ggml's matmul), avx2, avxvnni (AVX2 with
// AVX-VNNI), avx512 (without VNNI), avx512vnni; by default the widest the CPU has. A family the CPU lacks gives the
// widest it has below it.
const TypeKernels *chosen_table() {
    static const TypeKernels *table = []() -> const TypeKernels * {
        __builtin_cpu_init();
        if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || !__builtin_cpu_supports("f16c")) {
            return nullptr;
        }
        for (const TypeKernels &k : avx2_kernels) {
            if (ggml_type_size(k.type) != k.block_bytes || ggml_blck_size(k.type) != k.block_values)
                return nullptr;
        }
        const char *env = std::getenv("ADADECODE_QMATMUL");
        const std::string wanted = env ? env : "";
        if (wanted == "0" || wanted == "off")
            return nullptr;
        if (!wanted.empty() && wanted != "avx2" && wanted != "avxvnni" && wanted != "avx512" && wanted != "avx512vnni")
            std::fprintf(stderr,
                         "adadecode: ADADECODE_QMATMUL='%s' is not 0, avx2, avxvnni, avx512 or avx512vnni; "
                         "using the widest family this CPU has\n",
                         wanted.c_str());
        const bool has_avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                                __builtin_cpu_supports("avx512vl");
        if (wanted == "avx2")
            return avx2_kernels;
        if (wanted == "avxvnni" || !has_avx512)
            return __builtin_cpu_supports("avxvnni") ? avx_vnni_kernels : avx2_kernels;
        if (wanted == "avx512" || !__builtin_cpu_supports("avx512vnni"))
            return avx512_kernels;
        return avx512_vnni_kernels;
    }();
    return table;
}

// Activations are quantized with the chosen family's registers, so that ADADECODE_QMATMUL=avx2 runs all of an AVX2-only
// CPU's code.
bool quantize_with_avx512() {
    static const bool wide = chosen_table() == avx512_vnni_kernels || chosen_table() == avx512_kernels;
    return wide;
}

void quantize_row_32(const float *x, int64_t n_blocks, uint8_t *out) {
    (quantize_with_avx512() ? quantize_row_32_avx512 : quantize_row_32_avx2)(x, n_blocks, out);
}

void quantize_row_256(const float *x, int64_t n_blocks, ActBlock256 *out) {
    (quantize_with_avx512() ? quantize_row_256_avx512 : quantize_row_256_avx2)(x, n_blocks, out);
}

// The packed kernels for a weight type in the chosen family (nullptr: that type stays in the file layout). Only
// AVX-512 has them; ADADECODE_QMATMUL_PACK=0 keeps the file layout (to measure one against the other).
const TypeKernels *packed_kernels(ggml_type type) {
    static const TypeKernels *tables = []() -> const TypeKernels * {
        const char *env = std::getenv("ADADECODE_QMATMUL_PACK");
        if (env && (std::string(env) == "0" || std::string(env) == "off"))
            return nullptr;
        const TypeKernels *table = chosen_table();
        if (table == avx512_vnni_kernels)
            return packed_tables_vnni;
        if (table == avx512_kernels)
            return packed_tables_512;
        if (table == avx2_kernels)
            return packed_tables_avx2;
        if (table == avx_vnni_kernels)
            return packed_tables_avxvnni;
        return nullptr;
    }();
    if (!tables)
        return nullptr;
    for (size_t i = 0; i < n_kernel_types; ++i) {
        if (tables[i].type == type)
            return &tables[i];
    }
    return nullptr;
}

// A Q6_K matrix this large (in practice the output matrix) streams from memory on every pass; there the AVX2
// kernel measured 20-30 % faster for one row than the AVX-512 one (which wins on matrices that stay in cache).
constexpr size_t streamed_q6_k_bytes = size_t(64) << 20;

// The kernels for a weight (nullptr: ggml's matmul). The choice depends only on the weight, so every pass multiplies
// a given weight with the same kernel family.
const TypeKernels *kernels_for(const ggml_tensor *w) {
    const TypeKernels *table = chosen_table();
    if (!table)
        return nullptr;
    for (size_t i = 0; i < n_kernel_types; ++i) {
        if (table[i].type != w->type)
            continue;
        const bool odd_blocks = (w->ne[0] / table[i].block_values) % 2 != 0;
        const bool streamed_q6_k = w->type == GGML_TYPE_Q6_K && ggml_nbytes(w) > streamed_q6_k_bytes;
        return (table[i].block_pairs && odd_blocks) || streamed_q6_k ? &avx2_kernels[i] : &table[i];
    }
    return nullptr;
}

// The family's name, as qmatmul_family() reports it.
const char *family_name(const TypeKernels *table) {
    return table == avx512_vnni_kernels ? "avx512vnni"
           : table == avx512_kernels    ? "avx512"
           : table == avx_vnni_kernels  ? "avxvnni"
           : table == avx2_kernels      ? "avx2"
                                        : "off";
}

// See peak_macs_per_second in qmatmul_avx512.inc.
double peak_macs_per_second(const TypeKernels *table, long iterations) {
    return table == avx512_vnni_kernels ? peak_macs_per_second_vnni(iterations)
           : table == avx512_kernels    ? peak_macs_per_second_512(iterations)
           : table == avx_vnni_kernels  ? peak_macs_per_second_avxvnni(iterations)
                                        : peak_macs_per_second_avx2(iterations);
}

}  // namespace

#elif defined(ADADECODE_QMATMUL_ARM)

// The NEON kernel families: quantization, kernels, tables, family choice (same names as the x86 section above).
#include "qmatmul_neon.inc"

#endif

#if defined(ADADECODE_QMATMUL_X86) || defined(ADADECODE_QMATMUL_ARM)

namespace {

// Two activation rows: the two-row kernel, or the three-row one with the second row repeated (see
// qmatmul_two_row_kernel).
std::atomic<int> &two_row_width() {
    static std::atomic<int> width{[] {
        const char *env = std::getenv("ADADECODE_QMATMUL_TWO_ROWS");
        if (!env || !*env || std::string(env) == "2")
            return 2;
        if (std::string(env) == "3")
            return 3;
        std::fprintf(stderr, "adadecode: ADADECODE_QMATMUL_TWO_ROWS='%s' is not 2 or 3; using 2\n", env);
        return 2;
    }()};
    return width;
}

// One weight of a product: its outputs land in each output row from `column` on.
struct Part {
    const TypeKernels *k;
    const uint8_t *weights;  // the packed copy's bytes, or the file layout's
    size_t row_bytes;
    int64_t n_out, column;
    int64_t first_tile, end_tile;  // its tiles among the op's (all parts' in turn)
};
constexpr int max_parts = (GGML_MAX_SRC - 1) / 2;  // ggml_custom_4d takes fewer than GGML_MAX_SRC sources

// Bytes of one quantized activation row of n_blocks blocks of block_values (32 or 256) values.
size_t quantized_row_bytes(int64_t n_blocks, int block_values) {
    return static_cast<size_t>(n_blocks) * (block_values == 32 ? act32_bytes_per_block : sizeof(ActBlock256));
}

// A thread's activations for one block size (32 or 256 values), quantized once per op for all of its parts.
// Every thread quantizes all activation rows itself: a few microseconds, and no barrier needed between quantizing and
// multiplying. Grown only: a vector resized up again zero-fills, and a layer's matmuls alternate narrow and wide
// inputs.
const uint8_t *quantized_rows(const ggml_tensor *x, int block_values) {
    thread_local std::vector<uint8_t> storage[2];
    std::vector<uint8_t> &act = storage[block_values == 32 ? 0 : 1];
    const int64_t n_blocks = x->ne[0] / block_values, n_rows = x->ne[1];
    const size_t act_bytes = quantized_row_bytes(n_blocks, block_values);
    if (act.size() < act_bytes * static_cast<size_t>(n_rows))
        act.resize(act_bytes * static_cast<size_t>(n_rows));
    for (int64_t r = 0; r < n_rows; ++r) {
        const float *row = reinterpret_cast<const float *>(static_cast<const char *>(x->data) + r * x->nb[1]);
        uint8_t *dst_row = act.data() + act_bytes * r;
        if (block_values == 32) {
            quantize_row_32(row, n_blocks, dst_row);
        } else {
            quantize_row_256(row, n_blocks, reinterpret_cast<ActBlock256 *>(dst_row));
        }
    }
    return act.data();
}

constexpr uint64_t range_set = uint64_t(1) << 63;

uint64_t pack_range(int64_t front, int64_t back) {
    return range_set | static_cast<uint64_t>(back) << 32 | static_cast<uint64_t>(front);
}

// Claims tiles [*begin, *end) of `owner`'s share (tiles [share_begin, share_end) of the op): a quarter of what is left,
// at least one tile, from the front for the owner and from the back for another thread, so that the two meet in the
// middle. The first thread to look at a share this run sets it up. False when none is left.
bool claim_tiles(TileShare::State &share, int owner, bool own, int64_t share_begin, int64_t share_end, int64_t *begin,
                 int64_t *end) {
    std::atomic<uint64_t> &range = share.ranges[owner].value;
    uint64_t value = range.load(std::memory_order_acquire);
    if (value == 0) {
        const uint64_t fresh = pack_range(share_begin, share_end);
        if (range.compare_exchange_strong(value, fresh, std::memory_order_acq_rel))
            value = fresh;
    }
    for (;;) {
        const int64_t front = static_cast<int64_t>(value & 0xffffffffu);
        const int64_t back = static_cast<int64_t>((value & ~range_set) >> 32);
        if (front >= back)
            return false;
        const int64_t n = std::max<int64_t>(1, (back - front) / 4);
        const uint64_t claimed = own ? pack_range(front + n, back) : pack_range(front, back - n);
        if (range.compare_exchange_weak(value, claimed, std::memory_order_acq_rel)) {
            *begin = own ? front : back - n;
            *end = own ? front + n : back;
            return true;
        }
    }
}

// src: the activations, then per weight the weight and the tensor its kernels read (its packed copy, or the weight
// again for the file layout). The weights' tiles, all parts' in turn, are split evenly over the threads in whole
// tiles, so that a thread's rows start on a tile (a packed group) and its stream stays contiguous; with a TileShare
// (userdata) a thread that is done takes over the rest of another's share (see TileShare).
void compute(ggml_tensor *dst, int ith, int nth, void *userdata) {
    const ggml_tensor *x = dst->src[0];
    const int64_t n_in = x->ne[0], n_rows = x->ne[1];
    Part parts[max_parts];
    int n_parts = 0;
    int64_t n_tiles = 0;
    for (int s = 1; s + 1 < GGML_MAX_SRC && dst->src[s]; s += 2) {
        const ggml_tensor *w = dst->src[s], *data = dst->src[s + 1];
        const bool packed = data != w;
        Part &p = parts[n_parts++];
        p.k = packed ? packed_kernels(w->type) : kernels_for(w);
        p.weights = static_cast<const uint8_t *>(data->data);
        p.row_bytes = packed ? (n_in / p.k->block_values) * (p.k->block_bytes / packed_rows) : w->nb[1];
        p.n_out = w->ne[1];
        p.column = n_parts == 1 ? 0 : parts[n_parts - 2].column + parts[n_parts - 2].n_out;
        p.first_tile = n_tiles;
        n_tiles += (p.n_out + weight_tile - 1) / weight_tile;
        p.end_tile = n_tiles;
    }
    const uint8_t *acts_of_size[2] = {nullptr, nullptr};  // quantized when a part first needs them
    const int two_rows_as = two_row_width().load(std::memory_order_relaxed);
    // Tiles [first, last) of the op times activation rows [row_begin, row_end).
    auto multiply_tiles = [&](int64_t first, int64_t last, int64_t row_begin, int64_t row_end) {
        const uint8_t *acts[max_group];
        float results[weight_tile * max_group];
        for (int i = 0; i < n_parts; ++i) {
            const Part &p = parts[i];
            if (p.end_tile <= first || p.first_tile >= last)
                continue;
            const int64_t n_blocks = n_in / p.k->block_values;
            const size_t act_bytes = quantized_row_bytes(n_blocks, p.k->block_values);
            const uint8_t *&act = acts_of_size[p.k->block_values == 32 ? 0 : 1];
            if (!act)
                act = quantized_rows(x, p.k->block_values);
            const int two_rows = p.k->group_size >= 3 ? two_rows_as : 2;
            for (int64_t t = std::max(first, p.first_tile); t < std::min(last, p.end_tile); ++t) {
                const int64_t tile = (t - p.first_tile) * weight_tile;
                const int64_t tile_rows = std::min(p.n_out, tile + weight_tile) - tile;
                for (int64_t g = row_begin; g < row_end; g += p.k->group_size) {
                    const int nr = static_cast<int>(std::min<int64_t>(p.k->group_size, row_end - g));
                    const int width = nr == 2 ? two_rows : nr;
                    for (int j = 0; j < width; ++j) acts[j] = act + act_bytes * (g + std::min(j, nr - 1));
                    p.k->group[width - 1](p.weights + tile * p.row_bytes, p.row_bytes, tile_rows, acts, n_blocks,
                                          results);
                    for (int j = 0; j < nr; ++j) {
                        float *out = reinterpret_cast<float *>(static_cast<char *>(dst->data) + (g + j) * dst->nb[1]);
                        std::memcpy(out + p.column + tile, results + j * weight_tile, tile_rows * sizeof(float));
                    }
                }
            }
        }
    };
    const int64_t per_thread = (n_tiles + nth - 1) / nth;
    auto share_begin = [&](int t) { return std::min(n_tiles, per_thread * t); };
    auto share_end = [&](int t) { return std::min(n_tiles, per_thread * (t + 1)); };
    TileShare::State *share = userdata ? static_cast<TileShare *>(userdata)->state() : nullptr;
    if (!share || nth < 2 || nth > share->n_threads || n_rows > act_chunk) {
        // Prefill batches: a chunk of activation rows stays in cache while the weights stream past it once.
        for (int64_t chunk = 0; chunk < n_rows; chunk += act_chunk)
            multiply_tiles(share_begin(ith), share_end(ith), chunk, std::min(n_rows, chunk + act_chunk));
        return;
    }
    int64_t begin = 0, end = 0;
    for (int k = 0; k < nth; ++k) {
        const int owner = (ith + k) % nth;
        while (claim_tiles(*share, owner, k == 0, share_begin(owner), share_end(owner), &begin, &end))
            multiply_tiles(begin, end, 0, n_rows);
    }
    // The last thread out leaves the share as it found it, for the next run.
    if (share->finished.fetch_add(1, std::memory_order_acq_rel) == nth - 1) {
        for (int t = 0; t < nth; ++t) share->ranges[t].value.store(0, std::memory_order_relaxed);
        share->finished.store(0, std::memory_order_release);
    }
}

}  // namespace

double qmatmul_peak_macs_per_second() {
    const TypeKernels *table = chosen_table();
    if (!table)
        return 0.0;
    constexpr long iterations = 2000000;  // ~20-50 ms
    double best = 0.0;
    for (int rep = 0; rep < 3; ++rep) {  // the best of three: another process can only slow a run down
        best = std::max(best, peak_macs_per_second(table, iterations));
    }
    return best;
}

const char *qmatmul_family() {
    const TypeKernels *table = chosen_table();
    return table ? family_name(table) : "off";
}

int qmatmul_two_row_kernel() {
    return two_row_width().load();
}

int qmatmul_prefetch_min_rows() {
#ifdef ADADECODE_QMATMUL_X86
    return chosen_table() ? packed_prefetch_min_rows : 0;
#else
    return 0;
#endif
}

const char *qmatmul_q4_k_scale() {
#ifdef ADADECODE_QMATMUL_X86
    if (std::strcmp(qmatmul_family(), "avx512vnni") == 0)
        return q4_k_scale_by_dpwssd ? "dpwssd" : "mulld";
#endif
    return "";
}

const char *qmatmul_q4_k_high_nibbles() {
#ifdef ADADECODE_QMATMUL_X86
    if (std::strcmp(qmatmul_family(), "avx512vnni") == 0 || std::strcmp(qmatmul_family(), "avxvnni") == 0)
        return q4_k_high_nibbles_by_gfni ? "gfni" : "shift";
#endif
    return "";
}

void qmatmul_set_two_row_kernel(int width) {
    require_two_row_width(width);
    two_row_width() = width;
}

bool qmatmul_supports(const ggml_tensor *w) {
    return kernels_for(w) != nullptr && ggml_is_contiguous(w);
}

bool qmatmul_packs(const ggml_tensor *w) {
    return w->ne[1] % packed_rows == 0 && ggml_is_contiguous(w) && packed_kernels(w->type) != nullptr;
}

size_t qmatmul_packed_size(const ggml_tensor *w) {
    const TypeKernels &k = *packed_kernels(w->type);
    return static_cast<size_t>(w->ne[1] / packed_rows) * static_cast<size_t>(w->ne[0] / k.block_values) * k.block_bytes;
}

void qmatmul_pack(const ggml_tensor *w, const void *file_data, void *dst) {
    const TypeKernels &k = *packed_kernels(w->type);
    const int64_t n_blocks = w->ne[0] / k.block_values;
    const size_t file_block = ggml_type_size(w->type);
    void (*pack_block)(const uint8_t *, size_t, uint8_t *) = w->type == GGML_TYPE_Q6_K   ? pack_q6_k_block
                                                             : w->type == GGML_TYPE_Q5_0 ? pack_q5_0_block
                                                             : w->type == GGML_TYPE_Q8_0 ? pack_q8_0_block
                                                             : w->type == GGML_TYPE_Q4_1 ? pack_q4_1_block
                                                                                         : pack_q4_k_block;
    const uint8_t *src = static_cast<const uint8_t *>(file_data);
    uint8_t *out = static_cast<uint8_t *>(dst);
    for (int64_t group = 0; group < w->ne[1]; group += packed_rows) {
        for (int64_t b = 0; b < n_blocks; ++b, out += k.block_bytes) {
            pack_block(src + group * w->nb[1] + b * file_block, w->nb[1], out);
        }
    }
}

ggml_tensor *qmatmul_fused(ggml_context *ctx, const std::vector<ggml_tensor *> &weights, ggml_tensor *x,
                           const std::vector<ggml_tensor *> &packed, TileShare *share) {
    if (weights.empty() || weights.size() > static_cast<size_t>(max_parts) || packed.size() != weights.size())
        throw std::invalid_argument("qmatmul_fused: 1 to " + std::to_string(max_parts) +
                                    " weights, each with its packed copy or nullptr");
    if (x->type != GGML_TYPE_F32 || !ggml_is_contiguous(x))
        x = ggml_cont(ctx, x);
    ggml_tensor *args[GGML_MAX_SRC - 1] = {x};
    int64_t n_out = 0;
    for (size_t i = 0; i < weights.size(); ++i) {
        if (weights[i]->ne[0] != x->ne[0])
            throw std::invalid_argument("qmatmul_fused: the weights take inputs of different widths");
        args[1 + 2 * i] = weights[i];
        args[2 + 2 * i] = packed[i] ? packed[i] : weights[i];
        n_out += weights[i]->ne[1];
    }
    return ggml_custom_4d(ctx, GGML_TYPE_F32, n_out, x->ne[1], 1, 1, args, 1 + 2 * static_cast<int>(weights.size()),
                          compute, GGML_N_TASKS_MAX, share);
}

ggml_tensor *qmatmul(ggml_context *ctx, ggml_tensor *w, ggml_tensor *x, ggml_tensor *packed, TileShare *share) {
    if (ggml_nrows(x) != x->ne[1])
        return ggml_mul_mat(ctx, w, x);  // batched (3-d) products are not ours
    return qmatmul_fused(ctx, {w}, x, {packed}, share);
}

#else  // neither x86-64 nor aarch64: ggml's own matmul everywhere

double qmatmul_peak_macs_per_second() {
    return 0.0;
}

const char *qmatmul_family() {
    return "off";
}

int qmatmul_two_row_kernel() {
    return 2;
}

int qmatmul_prefetch_min_rows() {
    return 0;
}

const char *qmatmul_q4_k_scale() {
    return "";
}

const char *qmatmul_q4_k_high_nibbles() {
    return "";
}

void qmatmul_set_two_row_kernel(int width) {
    require_two_row_width(width);
}

bool qmatmul_supports(const ggml_tensor *) {
    return false;
}

bool qmatmul_packs(const ggml_tensor *) {
    return false;
}

size_t qmatmul_packed_size(const ggml_tensor *) {
    return 0;
}

void qmatmul_pack(const ggml_tensor *, const void *, void *) {}

ggml_tensor *qmatmul(ggml_context *ctx, ggml_tensor *w, ggml_tensor *x, ggml_tensor *, TileShare *) {
    return ggml_mul_mat(ctx, w, x);
}

ggml_tensor *qmatmul_fused(ggml_context *ctx, const std::vector<ggml_tensor *> &weights, ggml_tensor *x,
                           const std::vector<ggml_tensor *> &, TileShare *) {
    ggml_tensor *out = nullptr;
    for (ggml_tensor *w : weights)
        out = out ? ggml_concat(ctx, out, ggml_mul_mat(ctx, w, x), 0) : ggml_mul_mat(ctx, w, x);
    return out;
}

#endif

}  // namespace adadecode
