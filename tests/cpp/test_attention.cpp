// The CPU attention op (ggml/ops/attention.h) on random queries and F16 caches, with grouped-query heads:
//  - accuracy: within the error of its F16 roundings of an exact double-precision attention over the F16-rounded
//    query, and within a much tighter bound of ggml's own path (mul_mat, soft_max_ext, mul_mat), which rounds alike;
//  - masking: what a masked position holds never reaches the output (bitwise);
//  - batch invariance: a row's output is bitwise the same alone or among 2..7 rows, with 1, 2 or 3 threads;
//  - key counts that are no multiple of 16 (the vector tails);
//  - the AVX2 kernel gives bitwise the AVX-512 kernel's results (where the CPU has AVX-512; under qemu without it,
//    scripts/test_avx2_cpu.sh runs this test on the AVX2 kernel alone).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "check.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "ops/attention.h"

using namespace adadecode;

namespace {

constexpr int head_dim = 64, n_head = 6, n_head_kv = 2, n_alloc = 96;
constexpr int n_embd_kv = head_dim * n_head_kv;
constexpr float neg_inf = -std::numeric_limits<float>::infinity();

struct Problem {
    int n_kv;                       // positions attended (the mask's width)
    int pos0;                       // the first row's position: row r sees positions 0..pos0 + r
    std::vector<float> q;           // rows x n_head x head_dim
    std::vector<ggml_fp16_t> k, v;  // k: n_alloc x n_embd_kv; v: n_embd_kv x n_alloc (transposed)
};

Problem make_problem(int n_kv, int pos0, int max_rows, std::mt19937 &rng) {
    std::normal_distribution<float> normal(0.0f, 1.0f);
    Problem p{n_kv, pos0, {}, {}, {}};
    p.q.resize(static_cast<size_t>(max_rows) * n_head * head_dim);
    for (float &x : p.q) x = normal(rng) * 2.0f;  // scores of a few units: a peaked softmax, as in real models
    p.k.resize(static_cast<size_t>(n_alloc) * n_embd_kv);
    p.v.resize(p.k.size());
    for (ggml_fp16_t &x : p.k) x = ggml_fp32_to_fp16(normal(rng));
    for (ggml_fp16_t &x : p.v) x = ggml_fp32_to_fp16(normal(rng));
    return p;
}

// Output [n_rows][n_head * head_dim] for rows [first, first + n_rows), by our op or ggml's path.
enum class Path { ours, ours_avx2, ggml };

std::vector<float> attend(const Problem &p, int first, int n_rows, int n_threads, Path path) {
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
        for (int j = 0; j < p.n_kv; ++j) m[r * p.n_kv + j] = j <= p.pos0 + first + r ? 0.0f : neg_inf;
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

void check_problem(int n_kv, int pos0, std::mt19937 &rng) {
    constexpr int max_rows = 7;
    Problem p = make_problem(n_kv, pos0, max_rows, rng);
    const std::vector<float> ours = attend(p, 0, max_rows, 2, Path::ours);
    const std::vector<float> ggml = attend(p, 0, max_rows, 2, Path::ggml);
    // Bitwise, so that an AVX2-only CPU decodes the same tokens as an AVX-512 one (on an AVX2-only CPU both are the
    // AVX2 kernel, and this holds trivially).
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
    std::printf("n_kv %d pos0 %d: error %.3f of the F16 bound against exact, %.3f against ggml\n", n_kv, pos0,
                worst_exact, worst_ggml);
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

}  // namespace

int main() {
    ggml_cpu_init();
    if (!cpu_attention_supported(head_dim)) {
        std::printf("test_attention: the CPU attention op is not available here, nothing to test\n");
        return 0;
    }
    std::printf("test_attention: kernel %s\n", cpu_attention_family());
    std::mt19937 rng(7);
    check_problem(48, 40, rng);  // rows at positions 40..46 of 48 keys: whole 16-key vectors, padding masked
    check_problem(37, 20, rng);  // a tail of 5 keys
    check_problem(9, 2, rng);    // fewer keys than one vector
    check_problem(96, 89, rng);  // the whole cache
    if (g_failures) {
        std::fprintf(stderr, "test_attention: %d failures\n", g_failures);
        return 1;
    }
    std::printf("test_attention: ok\n");
    return 0;
}
