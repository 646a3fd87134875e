// adadecode-kernelbench: one weight matrix of random values through our matmul kernel for 1..9 activation rows,
// outside any model: milliseconds, multiply-accumulates per second and the share of the dot-product instruction's
// peak (qmatmul_peak_macs_per_second). A matrix that fits in the cache (the default, 1536 x 8960 as a 1.5B FFN
// matrix) measures the arithmetic; a large one (n_out 151936, the output matrix) measures streaming from memory, and
// a chain of small ones (mats) streams from memory as a model's pass does, one matmul and one barrier after another.
// `adadecode-kernelbench attention` times the attention op (ops/attention.h) instead, for 1..8 rows of a layer of
// the 1.5B's shape (12 query heads of 128 values over 2 KV heads) at a given number of positions.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ggml-cpp.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "huge_pages.h"
#include "ops/attention.h"
#include "ops/qmatmul.h"

using namespace adadecode;

namespace {

int usage() {
    std::fprintf(
        stderr,
        "usage: adadecode-kernelbench TYPE [packed=1] [n_in=1536] [n_out=8960] [threads=1] [reps=100] [mats=1]\n"
        "  TYPE: q4_1, q5_0, q8_0, q4_k or q6_k; packed: 1 = our 16-row layout where the CPU has it\n"
        "  mats: that many matrices of the shape, multiplied one after another (as a pass's chain of\n"
        "        small matmuls); times are per matrix\n"
        "usage: adadecode-kernelbench attention [n_kv=400] [threads=2] [reps=200]\n");
    return 2;
}

// The fastest of `reps` computations of gf (on a shared machine noise only adds), on a thread pool kept for all of
// them: ggml_graph_compute_with_ctx would start and join its threads every time, tens of microseconds that would
// swamp a small op's time.
double best_seconds(ggml_cgraph *gf, int threads, int reps) {
    ggml_threadpool_params tp_params = ggml_threadpool_params_default(threads);
    std::unique_ptr<ggml_threadpool, decltype(&ggml_threadpool_free)> pool(ggml_threadpool_new(&tp_params),
                                                                           ggml_threadpool_free);
    ggml_cplan plan = ggml_graph_plan(gf, threads, pool.get());
    std::vector<uint8_t> work(plan.work_size);
    plan.work_data = work.data();
    double best = 1e30;
    for (int rep = 0; rep < reps; ++rep) {
        const auto start = std::chrono::steady_clock::now();
        ggml_graph_compute(gf, &plan);
        best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return best;
}

// The attention op for 1..8 rows that all see the n_kv positions (as the rows of a decoding pass do).
int bench_attention(int n_kv, int threads, int reps) {
    constexpr int head_dim = 128, n_head = 12, n_head_kv = 2, max_rows = 8;
    if (n_kv < 1 || threads < 1 || reps < 1 || !cpu_attention_supported(head_dim)) {
        std::fprintf(stderr,
                     "adadecode-kernelbench: n_kv, threads and reps must be positive, and the CPU must run "
                     "our attention kernel\n");
        return usage();
    }
    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    ggml_init_params params{};
    params.mem_size = size_t(n_kv) * head_dim * n_head_kv * 2 * sizeof(ggml_fp16_t) * 2 + (size_t(16) << 20);
    const ggml_context_ptr owner(ggml_init(params));
    ggml_context *ctx = owner.get();
    ggml_tensor *k = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, head_dim * n_head_kv, n_kv);
    ggml_tensor *v = ggml_new_tensor_2d(ctx, GGML_TYPE_F16, n_kv, head_dim * n_head_kv);
    for (ggml_tensor *t : {k, v}) {
        for (int64_t i = 0; i < ggml_nelements(t); ++i)
            static_cast<ggml_fp16_t *>(t->data)[i] = ggml_fp32_to_fp16(normal(rng));
    }
    std::printf("attention (%s), %d positions, %d query heads of %d over %d KV heads, %d thread(s)\n",
                cpu_attention_family(), n_kv, n_head, head_dim, n_head_kv, threads);
    double one_row = 0.0;
    for (int rows = 1; rows <= max_rows; ++rows) {
        ggml_tensor *q = ggml_new_tensor_3d(ctx, GGML_TYPE_F32, head_dim, n_head, rows);
        for (int64_t i = 0; i < ggml_nelements(q); ++i) static_cast<float *>(q->data)[i] = normal(rng) * 0.3f;
        ggml_tensor *mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_kv, rows);
        std::fill_n(static_cast<float *>(mask->data), ggml_nelements(mask), 0.0f);
        ggml_tensor *out = cpu_attention(ctx, q, k, v, mask);
        ggml_cgraph *gf = ggml_new_graph(ctx);
        ggml_build_forward_expand(gf, out);
        const double best = best_seconds(gf, threads, reps);
        if (rows == 1)
            one_row = best;
        std::printf("rows %d: %7.1f us  x%.2f of one row  %6.1f us a row\n", rows, best * 1e6, best / one_row,
                    best * 1e6 / rows);
    }
    return 0;
}

std::string lower(std::string s) {
    std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return s;
}

ggml_type type_named(const std::string &name) {
    for (ggml_type t : {GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K}) {
        if (lower(name) == lower(ggml_type_name(t)))
            return t;
    }
    return GGML_TYPE_COUNT;
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 2)
        return usage();
    if (std::string(argv[1]) == "attention") {
        return bench_attention(argc > 2 ? std::atoi(argv[2]) : 400, argc > 3 ? std::atoi(argv[3]) : 2,
                               argc > 4 ? std::atoi(argv[4]) : 200);
    }
    const ggml_type type = type_named(argv[1]);
    const bool pack = argc > 2 ? std::atoi(argv[2]) != 0 : true;
    const int n_in = argc > 3 ? std::atoi(argv[3]) : 1536;
    const int n_out = argc > 4 ? std::atoi(argv[4]) : 8960;
    const int threads = argc > 5 ? std::atoi(argv[5]) : 1;
    const int reps = argc > 6 ? std::atoi(argv[6]) : 100;
    const int mats = argc > 7 ? std::atoi(argv[7]) : 1;
    if (type == GGML_TYPE_COUNT) {
        std::fprintf(stderr, "adadecode-kernelbench: unknown type '%s'\n", argv[1]);
        return usage();
    }
    if (n_in <= 0 || n_out <= 0 || n_in % ggml_blck_size(type) != 0 || threads < 1 || reps < 1 || mats < 1) {
        std::fprintf(stderr,
                     "adadecode-kernelbench: n_in must be a positive multiple of %lld, n_out, threads, "
                     "reps and mats positive\n",
                     static_cast<long long>(ggml_blck_size(type)));
        return usage();
    }

    std::mt19937 rng(1);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> values(static_cast<size_t>(n_in) * n_out);
    for (float &v : values) v = normal(rng) * 0.05f;
    const size_t weight_bytes = ggml_row_size(type, n_in) * n_out;
    constexpr int max_rows = 9;
    ggml_init_params params{};
    // Each matrix in the file layout and packed (Q4_K's packed layout is 2.8 % larger), the activations and outputs,
    // one graph per row count, and tensor overheads.
    const size_t graph_size = 2 * static_cast<size_t>(mats) + 16;  // a weight, its packed copy and a product each
    params.mem_size =
        (2 * weight_bytes + weight_bytes / 16 + (size_t(1) << 16)) * mats +
        static_cast<size_t>(max_rows) * (n_in + static_cast<size_t>(n_out) * mats) * sizeof(float) * max_rows +
        max_rows * ggml_graph_overhead_custom(graph_size, false) + (size_t(16) << 20);
    // In 2 MiB pages, as the model's packed weights (Model::pack_weights). With whatever pages malloc got, the one-row
    // product of a matrix streamed from memory (1536 x 151936 Q6_K, AVX-512 Zen 4, 2 threads) took 2.8 or 4.9 ms
    // from one run to the next; with 2 MiB pages it took 4.8-5.4 ms in every run.
    const HugePageBuffer memory = allocate_huge_pages(params.mem_size);
    if (!memory) {
        std::fprintf(stderr, "adadecode-kernelbench: cannot allocate %zu MiB\n", params.mem_size >> 20);
        return 1;
    }
    params.mem_buffer = memory.get();
    const ggml_context_ptr owner(ggml_init(params));
    ggml_context *ctx = owner.get();
    if (!ctx) {
        std::fprintf(stderr, "adadecode-kernelbench: cannot allocate %zu MiB\n", params.mem_size >> 20);
        return 1;
    }
    // Copies of one matrix: distinct memory is what a chain streams; the values do not change its speed.
    std::vector<ggml_tensor *> weights, packed_weights;
    for (int m = 0; m < mats; ++m) {
        ggml_tensor *w = ggml_new_tensor_2d(ctx, type, n_in, n_out);
        if (m == 0)
            ggml_quantize_chunk(type, values.data(), w->data, 0, n_out, n_in, nullptr);
        else
            std::memcpy(w->data, weights[0]->data, weight_bytes);
        if (!qmatmul_supports(w)) {
            std::fprintf(stderr, "adadecode-kernelbench: our kernel does not take %s on this CPU\n",
                         ggml_type_name(type));
            return 1;
        }
        ggml_tensor *packed = nullptr;
        if (pack && qmatmul_packs(w)) {
            packed = ggml_new_tensor_1d(ctx, GGML_TYPE_I8, static_cast<int64_t>(qmatmul_packed_size(w)));
            qmatmul_pack(w, w->data, packed->data);
        }
        weights.push_back(w);
        packed_weights.push_back(packed);
    }
    const double peak = qmatmul_peak_macs_per_second();
    std::printf("%s %d x %d (%.1f MiB)%s, %s, %d thread(s); int8 peak %.1f GMAC/s per core\n", ggml_type_name(type),
                n_in, n_out, weight_bytes / 1048576.0,
                mats > 1 ? (" x " + std::to_string(mats) + " matrices, times per matrix").c_str() : "",
                packed_weights[0] ? "packed" : "file layout", threads, peak / 1e9);

    double one_row = 0.0;
    for (int rows = 1; rows <= max_rows; ++rows) {
        ggml_tensor *x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_in, rows);
        for (int64_t i = 0; i < ggml_nelements(x); ++i) static_cast<float *>(x->data)[i] = normal(rng);
        ggml_cgraph *gf = ggml_new_graph_custom(ctx, graph_size, false);
        for (int m = 0; m < mats; ++m) ggml_build_forward_expand(gf, qmatmul(ctx, weights[m], x, packed_weights[m]));
        const double best = best_seconds(gf, threads, reps) / mats;
        if (rows == 1)
            one_row = best;
        const double macs = static_cast<double>(n_in) * n_out * rows / best;
        std::printf("rows %d: %8.3f ms  x%.2f of one row  %6.1f GMAC/s (%4.1f %% of peak)  %5.1f GB/s of weights\n",
                    rows, best * 1e3, best / one_row, macs / 1e9, peak > 0 ? 100.0 * macs / (peak * threads) : 0.0,
                    weight_bytes / best / 1e9);
    }
    return 0;
}
