// The CPU attention op (ggml/ops/attention.h) on random queries and F16 caches, with grouped-query heads:
//  - accuracy: within the error of its F16 roundings of an exact double-precision attention over the F16-rounded
//    query, and within a much tighter bound of ggml's own path (mul_mat, soft_max_ext, mul_mat), which rounds alike;
//  - masking: what a masked position holds never reaches the output (bitwise);
//  - batch invariance: a row's output is bitwise the same alone or among 2..7 rows, with 1, 2 or 3 threads;
//  - key counts that are no multiple of 16 (the vector tails);
//  - the AVX2 kernel gives bitwise the AVX-512 kernel's results (where the CPU has AVX-512; under qemu without it,
//    scripts/test_avx2_cpu.sh runs this test on the AVX2 kernel alone);
//  - the same results on every architecture: on queries and caches made from integers alone (the same bytes on any
//    machine), with head sizes 16 to 256, masks with holes and fully masked rows, and scores far enough apart that
//    some probabilities underflow, a checksum of the outputs must equal the one the x86 kernels computed, kept in
//    attention_x86_checksums.txt (scripts/test_arm.sh runs this on the NEON kernel under qemu).
//    `test_attention --write-checksums FILE` writes that file on x86.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "check.h"
#include "checksums.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "ops/attention.h"

using namespace adadecode;

namespace {

constexpr int n_head = 6, n_head_kv = 2, n_alloc = 96, max_rows = 7;
constexpr float neg_inf = -std::numeric_limits<float>::infinity();

struct Problem {
    int head_dim;
    int n_kv;                       // positions attended (the mask's width)
    int pos0;                       // the first row's position: row r sees positions 0..pos0 + r
    bool holes;                     // also masked: row 0 entirely, and scattered positions of the other rows
    std::vector<float> q;           // rows x n_head x head_dim
    std::vector<ggml_fp16_t> k, v;  // k: n_alloc x n_embd_kv; v: n_embd_kv x n_alloc (transposed)
    int n_embd_kv() const { return head_dim * n_head_kv; }
};

Problem make_problem(int head_dim, int n_kv, int pos0, std::mt19937 &rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Problem p{head_dim, n_kv, pos0, false, {}, {}, {}};
    p.q.resize(static_cast<size_t>(max_rows) * n_head * head_dim);
    // Scores of a few units: a peaked softmax, as in real models.
    for (float &x : p.q) x = normal(rng) * 2.0f * std::sqrt(64.0f / head_dim);
    p.k.resize(static_cast<size_t>(n_alloc) * p.n_embd_kv());
    p.v.resize(p.k.size());
    for (ggml_fp16_t &x : p.k) x = ggml_fp32_to_fp16(normal(rng));
    for (ggml_fp16_t &x : p.v) x = ggml_fp32_to_fp16(normal(rng));
    return p;
}

// SplitMix64: the same numbers on every machine (the standard's distributions are not).
struct SplitMix {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
};

// Inputs made from integers: exact in F32 and, for the caches, in F16, so every machine holds the same bits. The
// queries carry 21 significant bits, so their rounding to F16 is exercised; every 11th key is 64 times larger, so
// that scores lie hundreds apart and some probabilities underflow to 0 or to subnormals.
Problem make_integer_problem(int head_dim, int n_kv, int pos0, bool holes, uint64_t seed) {
    SplitMix rng{seed};
    Problem p{head_dim, n_kv, pos0, holes, {}, {}, {}};
    p.q.resize(static_cast<size_t>(max_rows) * n_head * head_dim);
    for (float &x : p.q) x = std::ldexp(static_cast<float>(static_cast<int>(rng.next() % (1 << 21)) - (1 << 20)), -17);
    p.k.resize(static_cast<size_t>(n_alloc) * p.n_embd_kv());
    p.v.resize(p.k.size());
    for (size_t i = 0; i < p.k.size(); ++i) {
        const float x = std::ldexp(static_cast<float>(static_cast<int>(rng.next() % 2049) - 1024), -10);
        p.k[i] = ggml_fp32_to_fp16(i / p.n_embd_kv() % 11 == 5 ? 64.0f * x : x);
    }
    for (ggml_fp16_t &x : p.v)
        x = ggml_fp32_to_fp16(std::ldexp(static_cast<float>(static_cast<int>(rng.next() % 2049) - 1024), -9));
    return p;
}

bool masked(const Problem &p, int row, int j) {
    return j > p.pos0 + row || (p.holes && (row == 0 || (j * 7 + row) % 5 == 0));
}

bool x86_kernel() {
    const std::string family = cpu_attention_family();
    return family == "avx2" || family == "avx512";
}

// Output [n_rows][n_head * head_dim] for rows [first, first + n_rows), by our op or ggml's path.
enum class Path { ours, ours_avx2, ggml };

std::vector<float> attend(const Problem &p, int first, int n_rows, int n_threads, Path path) {
    const int head_dim = p.head_dim, n_embd_kv = p.n_embd_kv();
    ggml_init_params params{};
    params.mem_size = (size_t(8) << 20) + 64 * ggml_tensor_overhead() + ggml_graph_overhead();
    ggml_context *ctx = ggml_init(params);
    ggml_tensor *q = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, head_dim, n_head, n_rows);
    std::memcpy(q->data, p.q.data() + static_cast<size_t>(first) * n_head * head_dim, ggml_nbytes(q));
    ggml_tensor *k = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_embd_kv, n_alloc);
    ggml_tensor *v = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_alloc, n_embd_kv);
    std::memcpy(k->data, p.k.data(), ggml_nbytes(k));
    std::memcpy(v->data, p.v.data(), ggml_nbytes(v));
    ggml_tensor *mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, p.n_kv, n_rows);
    float *m = static_cast<float *>(mask->data);
    for (int r = 0; r < n_rows; ++r) {
        for (int j = 0; j < p.n_kv; ++j) m[r * p.n_kv + j] = masked(p, first + r, j) ? neg_inf : 0.0f;
    }
    ggml_tensor *out;
    if (path == Path::ours) {
        out = cpu_attention(ctx, q, k, v, mask);
    } else if (path == Path::ours_avx2) {
        out = cpu_attention_avx2(ctx, q, k, v, mask);
    } else {
        ggml_tensor *keys = ggml_view_3d(ctx, k, head_dim, p.n_kv, n_head_kv, k->nb[1], head_dim * k->nb[0], 0);
        ggml_tensor *values = ggml_view_3d(ctx, v, p.n_kv, head_dim, n_head_kv, v->nb[1], head_dim * v->nb[1], 0);
        ggml_tensor *kq = ggml_mul_mat(ctx, keys, ggml_permute(ctx, q, 0, 2, 1, 3));
        kq = ggml_soft_max_ext(ctx, kq, mask, 1.0f / std::sqrt(static_cast<float>(head_dim)), 0.0f);
        ggml_tensor *kqv = ggml_mul_mat(ctx, values, kq);
        out = ggml_cont_2d(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3), head_dim * n_head, n_rows);
    }
    ggml_cgraph *gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, out);
    ggml_graph_compute_with_ctx(ctx, gf, n_threads);
    std::vector<float> result(static_cast<size_t>(n_rows) * n_head * head_dim);
    std::memcpy(result.data(), out->data, result.size() * sizeof(float));
    ggml_free(ctx);
    return result;
}

// Exact attention of one row and head over the F16-rounded query; `scale_v` receives max |v| over the dimension.
void reference(const Problem &p, int row, int head, int d, double *exact, double *scale_v) {
    const int head_dim = p.head_dim, n_embd_kv = p.n_embd_kv();
    const int kv_head = head / (n_head / n_head_kv);
    const int last = std::min(p.n_kv - 1, p.pos0 + row);
    std::vector<double> score(last + 1);
    double max_score = -1e300;
    for (int j = 0; j <= last; ++j) {
        double s = 0.0;
        for (int i = 0; i < head_dim; ++i) {
            const float qi =
                ggml_fp16_to_fp32(ggml_fp32_to_fp16(p.q[(static_cast<size_t>(row) * n_head + head) * head_dim + i]));
            s += qi * ggml_fp16_to_fp32(p.k[static_cast<size_t>(j) * n_embd_kv + kv_head * head_dim + i]);
        }
        score[j] = s / std::sqrt(static_cast<double>(head_dim));
        max_score = std::max(max_score, score[j]);
    }
    double sum = 0.0;
    for (double &s : score) sum += (s = std::exp(s - max_score));
    *exact = 0.0;
    *scale_v = 0.0;
    for (int j = 0; j <= last; ++j) {
        const double vj = ggml_fp16_to_fp32(p.v[static_cast<size_t>(kv_head * head_dim + d) * n_alloc + j]);
        *exact += score[j] / sum * vj;
        *scale_v = std::max(*scale_v, std::fabs(vj));
    }
}

void check_problem(int head_dim, int n_kv, int pos0, std::mt19937 &rng) {
    Problem p = make_problem(head_dim, n_kv, pos0, rng);
    const int n_embd_kv = p.n_embd_kv();
    const std::vector<float> ours = attend(p, 0, max_rows, 2, Path::ours);
    const std::vector<float> ggml = attend(p, 0, max_rows, 2, Path::ggml);
    // Bitwise, so that an AVX2-only CPU decodes the same tokens as an AVX-512 one (on an AVX2-only CPU both are the
    // AVX2 kernel, and this holds trivially). Off x86 the checksums against x86's results stand for it.
    if (x86_kernel())
        CHECK(attend(p, 0, max_rows, 2, Path::ours_avx2) == ours);
    double worst_exact = 0.0, worst_ggml = 0.0;
    for (int r = 0; r < max_rows; ++r) {
        for (int h = 0; h < n_head; ++h) {
            for (int d = 0; d < head_dim; ++d) {
                const size_t i = (static_cast<size_t>(r) * n_head + h) * head_dim + d;
                double exact, scale_v;
                reference(p, r, h, d, &exact, &scale_v);
                // Probabilities rounded to F16 are off by 2^-11 relative each: at most that of sum |p v|.
                worst_exact = std::max(worst_exact, std::fabs(ours[i] - exact) / (scale_v * std::ldexp(1.0, -11)));
                worst_ggml = std::max(worst_ggml, std::fabs(ours[i] - ggml[i]) / (scale_v * std::ldexp(1.0, -11)));
            }
        }
    }
    std::printf("head_dim %d n_kv %d pos0 %d: error %.3f of the F16 bound against exact, %.3f against ggml\n", head_dim,
                n_kv, pos0, worst_exact, worst_ggml);
    CHECK(worst_exact <= 1.0);
    CHECK(worst_ggml <= 0.25);  // the same roundings as ggml: far closer to it than to the exact value

    // Masked positions: change what they hold, the output must not move.
    Problem poisoned = p;
    const int last_seen = std::min(n_kv - 1, pos0 + max_rows - 1);
    for (int j = last_seen + 1; j < n_alloc; ++j) {
        for (int c = 0; c < n_embd_kv; ++c) {
            poisoned.k[static_cast<size_t>(j) * n_embd_kv + c] = ggml_fp32_to_fp16(1000.0f);
            poisoned.v[static_cast<size_t>(c) * n_alloc + j] = ggml_fp32_to_fp16(-1000.0f);
        }
    }
    CHECK(attend(poisoned, 0, max_rows, 2, Path::ours) == ours);

    // Batch invariance.
    const size_t row_size = static_cast<size_t>(n_head) * head_dim;
    for (int threads = 1; threads <= 3; ++threads) {
        for (int n_rows = 1; n_rows <= max_rows; ++n_rows) {
            for (int first = 0; first + n_rows <= max_rows; first += 2) {
                const std::vector<float> part = attend(p, first, n_rows, threads, Path::ours);
                CHECK(std::memcmp(part.data(), ours.data() + first * row_size, part.size() * sizeof(float)) == 0);
            }
        }
    }
}

// A prompt pass: 80 rows at positions 0..79, each seeing its own positions only, so that the kernels' runs of (row,
// query head) pairs sharing a KV head (at most 64 pairs) end mid-batch and hold rows of different lengths. Each row
// must come out bitwise as computed alone, with 1, 2 or 3 threads, and the AVX2 kernel as the AVX-512 one.
void check_prompt_batch(std::mt19937 &rng) {
    constexpr int rows = 80, head_dim = 64;
    Problem p = make_problem(head_dim, n_alloc, 0, rng);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    p.q.resize(static_cast<size_t>(rows) * n_head * head_dim);
    for (float &x : p.q) x = normal(rng) * 2.0f;
    const size_t row_size = static_cast<size_t>(n_head) * head_dim;
    std::vector<float> alone;
    for (int r = 0; r < rows; ++r) {
        const std::vector<float> one = attend(p, r, 1, 1, Path::ours);
        alone.insert(alone.end(), one.begin(), one.end());
    }
    for (int threads = 1; threads <= 3; ++threads) CHECK(attend(p, 0, rows, threads, Path::ours) == alone);
    if (x86_kernel())
        CHECK(attend(p, 0, rows, 2, Path::ours_avx2) == alone);
    CHECK(alone.size() == rows * row_size);
    std::printf("prompt batch of %d rows: each row as alone\n", rows);
}

// "hd64 kv37 pos20 holes" -> checksum of all max_rows rows in one batch (2 threads; batch invariance is tested
// apart).
Checksums cross_arch_checksums() {
    struct Case {
        int head_dim, n_kv, pos0;
        bool holes;
    };
    const Case cases[] = {
        {64, 48, 40, false}, {64, 37, 20, false},  {64, 9, 2, false},   {64, 96, 89, true},   {64, 37, 30, true},
        {16, 40, 33, false}, {128, 96, 89, false}, {128, 37, 20, true}, {256, 37, 30, false},
    };
    Checksums sums;
    uint64_t seed = 1;
    for (const Case &c : cases) {
        const Problem p = make_integer_problem(c.head_dim, c.n_kv, c.pos0, c.holes, seed++);
        const std::string key = "hd" + std::to_string(c.head_dim) + " kv" + std::to_string(c.n_kv) + " pos" +
                                std::to_string(c.pos0) + (c.holes ? " holes" : " causal");
        const std::vector<float> out = attend(p, 0, max_rows, 2, Path::ours);
        for (float x : out) CHECK(std::isfinite(x));
        sums[key] = fnv1a(out);
    }
    return sums;
}

}  // namespace

int main(int argc, char **argv) {
    ggml_cpu_init();
    const bool available = cpu_attention_supported(64);
    if (argc == 3 && std::string(argv[1]) == "--write-checksums") {
        if (!available || !x86_kernel()) {
            std::fprintf(stderr, "--write-checksums needs an x86 kernel (kernel here: %s)\n", cpu_attention_family());
            return 2;
        }
        const char *header =
            "# Checksums of the CPU attention op's outputs on integer-made queries and caches\n"
            "# (tests/cpp/test_attention.cpp), computed by the x86 kernels (AVX2 and AVX-512 agree bitwise):\n"
            "# head size, keys, first row's position, mask, FNV-1a of the output floats.\n";
        return write_checksums(argv[2], header, cross_arch_checksums()) ? 0 : 1;
    }
    if (argc != 1) {
        std::fprintf(stderr, "usage: test_attention [--write-checksums FILE]\n");
        return 2;
    }
    if (!available) {
        std::printf("test_attention: the CPU attention op is not available here, nothing to test\n");
        return 0;
    }
    std::printf("test_attention: kernel %s\n", cpu_attention_family());
    check_checksums(ADADECODE_TEST_DATA_DIR "/attention_x86_checksums.txt", cross_arch_checksums(),
                    std::string("kernel ") + cpu_attention_family());
    std::mt19937 rng(7);
    check_problem(64, 48, 40, rng);   // rows at positions 40..46 of 48 keys: whole 16-key vectors, padding masked
    check_problem(64, 37, 20, rng);   // a tail of 5 keys
    check_problem(64, 9, 2, rng);     // fewer keys than one vector
    check_problem(64, 96, 89, rng);   // the whole cache
    check_problem(128, 37, 20, rng);  // the head size of most 0.5B-7B models
    check_prompt_batch(rng);
    if (g_failures) {
        std::fprintf(stderr, "test_attention: %d failures\n", g_failures);
        return 1;
    }
    std::printf("test_attention: ok\n");
    return 0;
}
