// Repacked weights on a synthetic matrix, no model file needed: each quantized type that ggml's CPU extra buffer
// types accept on this machine is placed there, and mul_mat_batch_invariant must give every row bitwise the same
// result whether it is multiplied alone or among 2..20 rows (the plain ggml_mul_mat is shown for comparison only),
// and a result close to the float product (a wrong layout would give garbage).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "ggml-alloc.h"
#include "ggml-cpu.h"
#include "repack.h"

#include "check.h"

using namespace adadecode;

namespace {

constexpr int n_in = 512;   // a multiple of every block size
constexpr int n_out = 64;
constexpr int max_rows = 20;

// Rows of w · x for the first n rows of `x_rows`.
std::vector<float> multiply(ggml_backend_t backend, ggml_tensor *w, const std::vector<float> &x_rows, int n,
                            bool invariant) {
    ggml_init_params params{};
    params.mem_size = 16 * ggml_tensor_overhead() + ggml_graph_overhead();
    params.no_alloc = true;
    ggml_context *ctx = ggml_init(params);
    ggml_tensor *x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_in, n);
    ggml_set_input(x);
    ggml_tensor *y = invariant ? mul_mat_batch_invariant(ctx, w, x) : ggml_mul_mat(ctx, w, x);
    ggml_set_output(y);
    ggml_cgraph *gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, y);
    ggml_gallocr_t alloc = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend));
    ggml_gallocr_alloc_graph(alloc, gf);
    ggml_backend_tensor_set(x, x_rows.data(), 0, sizeof(float) * n_in * n);
    CHECK(ggml_backend_graph_compute(backend, gf) == GGML_STATUS_SUCCESS);
    std::vector<float> out(static_cast<size_t>(n_out) * n);
    ggml_backend_tensor_get(y, out.data(), 0, out.size() * sizeof(float));
    ggml_gallocr_free(alloc);
    ggml_free(ctx);
    return out;
}

// Returns whether the type was tested (some extra buffer type takes it here).
bool check_type(ggml_type type, ggml_backend_t backend) {
    std::mt19937 rng(42);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> w_f32(static_cast<size_t>(n_in) * n_out), x_rows(static_cast<size_t>(n_in) * max_rows);
    for (float &v : w_f32) v = normal(rng) * 0.05f;
    for (float &v : x_rows) v = normal(rng);
    std::vector<uint8_t> w_q(ggml_row_size(type, n_in) * n_out);
    ggml_quantize_chunk(type, w_f32.data(), w_q.data(), 0, n_out, n_in, nullptr);

    ggml_init_params params{};
    params.mem_size = ggml_tensor_overhead();
    params.no_alloc = true;
    ggml_context *ctx = ggml_init(params);
    ggml_tensor *w = ggml_new_tensor_2d(ctx, type, n_in, n_out);
    const auto chosen = choose_extra_buffer_types({w});
    if (chosen.empty()) {
        std::printf("%s: no extra buffer type takes it here\n", ggml_type_name(type));
        ggml_free(ctx);
        return false;
    }
    ggml_backend_buffer_t buffer = ggml_backend_buft_alloc_buffer(chosen[0].second, ggml_nbytes(w) + 64);
    ggml_tallocr talloc = ggml_tallocr_new(buffer);
    CHECK(ggml_tallocr_alloc(&talloc, w) == GGML_STATUS_SUCCESS);
    ggml_backend_tensor_set(w, w_q.data(), 0, w_q.size());
    CHECK(in_extra_buffer(w));

    // Each row alone, then among k rows.
    std::vector<float> alone(static_cast<size_t>(n_out) * max_rows);
    for (int r = 0; r < max_rows; ++r) {
        std::vector<float> row(x_rows.begin() + static_cast<size_t>(r) * n_in, x_rows.begin() + (r + 1) * n_in);
        const std::vector<float> y = multiply(backend, w, row, 1, true);
        std::copy(y.begin(), y.end(), alone.begin() + static_cast<size_t>(r) * n_out);
    }
    std::printf("%s in %s:", ggml_type_name(type), ggml_backend_buft_name(chosen[0].second));
    for (int k = 2; k <= max_rows; ++k) {
        const std::vector<float> y = multiply(backend, w, x_rows, k, true);
        const bool same = std::memcmp(y.data(), alone.data(), y.size() * sizeof(float)) == 0;
        CHECK(same);
        const std::vector<float> plain = multiply(backend, w, x_rows, k, false);
        const bool plain_same = std::memcmp(plain.data(), alone.data(), plain.size() * sizeof(float)) == 0;
        std::printf(" %d:%s%s", k, same ? "equal" : "DIFFERENT", plain_same ? "" : "(plain mul_mat differs)");
    }
    std::printf("\n");

    // Close to the float product of the dequantized weights (activations are rounded to 8 bits by the kernel).
    std::vector<float> w_deq(w_f32.size());
    ggml_get_type_traits(type)->to_float(w_q.data(), w_deq.data(), static_cast<int64_t>(w_deq.size()));
    double worst = 0.0, scale = 0.0;
    for (int r = 0; r < max_rows; ++r) {
        for (int o = 0; o < n_out; ++o) {
            double ref = 0.0;
            for (int i = 0; i < n_in; ++i) ref += static_cast<double>(w_deq[o * n_in + i]) * x_rows[r * n_in + i];
            worst = std::max(worst, std::fabs(ref - alone[r * n_out + o]));
            scale = std::max(scale, std::fabs(ref));
        }
    }
    CHECK(worst < 0.02 * scale);
    ggml_backend_buffer_free(buffer);
    ggml_free(ctx);
    return true;
}

}  // namespace

int main() {
    ggml_backend_t backend = ggml_backend_cpu_init();
    ggml_backend_cpu_set_n_threads(backend, 2);
    int tested = 0;
    for (ggml_type type : {GGML_TYPE_Q4_0, GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K,
                           GGML_TYPE_Q5_K, GGML_TYPE_Q6_K, GGML_TYPE_IQ4_NL}) {
        tested += check_type(type, backend) ? 1 : 0;
    }
    ggml_backend_free(backend);
    if (g_failures) {
        std::fprintf(stderr, "%d check(s) failed\n", g_failures);
        return 1;
    }
    std::printf("test_repack: all checks passed (%d types repacked here)\n", tested);
    return 0;
}
