// The small-batch quantized matmul (ggml/ops/qmatmul.h), on random weights quantized by ggml itself:
//  - accuracy: every output is within the error that 8-bit activations can cause, computed per output from the
//    dequantized weights (sum over blocks of |w| * half an activation step), against an exact double-precision
//    product of ggml's dequantized weights with the float activations; a wrong unpacking is off by far more;
//  - the same bound holds for ggml's own mul_mat on the same data (so the bound is not too loose to mean anything,
//    ggml is checked to be close to it too);
//  - batch invariance: a row's outputs are bitwise equal whether it is multiplied alone or among 2..11 rows, at any
//    position in the batch, with 1, 2 or 3 threads, two rows through either kernel width (qmatmul_two_row_kernel);
//  - a fused product of several weights (qmatmul_fused): each weight's outputs bitwise those of it alone, with tiles
//    split statically or through a TileShare run after run;
//  - the same for Q4_K, Q6_K, Q5_0, Q8_0 and Q4_1 weights packed into the kernel's own layout (qmatmul_pack), where the
//    CPU has that kernel;
//  - the same results on every architecture: on weights and activations made from integers alone (the same bytes on
//    any machine), a checksum of the outputs must equal the one the x86 families computed, kept in
//    qmatmul_x86_checksums.txt (packed layouts: every family; file layout: the AVX2 family and the ARM ones, which sum
//    in its order). `test_qmatmul --write-checksums FILE` writes that file (run it with ADADECODE_QMATMUL=avx2).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "check.h"
#include "checksums.h"
#include "ggml-cpu.h"
#include "ggml.h"
#include "ops/qmatmul.h"

using namespace adadecode;

namespace {

constexpr int max_rows = 11;

enum class Kernel { ggml, ours, packed };

struct Problem {
    ggml_type type;
    int n_in;
    int n_out;
    std::vector<uint8_t> weights;    // quantized, n_out rows
    std::vector<float> dequantized;  // n_out x n_in
    std::vector<float> x;            // max_rows x n_in
};

Problem make_problem(ggml_type type, int n_in, int n_out, std::mt19937 &rng) {
    Problem p{type, n_in, n_out, {}, {}, {}};
    std::normal_distribution<float> normal(0.0f, 1.0f);
    std::vector<float> w(static_cast<size_t>(n_out) * n_in);
    for (float &v : w) v = normal(rng) * 0.05f;
    p.weights.resize(ggml_row_size(type, n_in) * n_out);
    ggml_quantize_chunk(type, w.data(), p.weights.data(), 0, n_out, n_in, nullptr);
    p.dequantized.resize(w.size());
    ggml_get_type_traits(type)->to_float(p.weights.data(), p.dequantized.data(), static_cast<int64_t>(w.size()));
    p.x.resize(static_cast<size_t>(max_rows) * n_in);
    for (size_t i = 0; i < p.x.size(); ++i) {
        // Activations with outliers, as after an RMS norm: the scale of a block follows its largest value.
        p.x[i] = normal(rng) * (i % 97 == 0 ? 8.0f : 1.0f);
    }
    return p;
}

struct Weight {
    ggml_tensor *w;
    ggml_tensor *packed;  // its copy in our layout with Kernel::packed, else nullptr
};

Weight load_weight(ggml_context *ctx, const Problem &p, Kernel kernel) {
    Weight out{ggml_new_tensor_2d(ctx, p.type, p.n_in, p.n_out), nullptr};
    std::memcpy(out.w->data, p.weights.data(), p.weights.size());
    if (kernel == Kernel::packed) {
        out.packed = ggml_new_tensor_1d(ctx, GGML_TYPE_I8, static_cast<int64_t>(qmatmul_packed_size(out.w)));
        qmatmul_pack(out.w, p.weights.data(), out.packed->data);
    }
    return out;
}

// Output [n_out, n_rows] of qmatmul (or ggml_mul_mat) on rows [first, first + n_rows) of p.x.
std::vector<float> multiply(const Problem &p, int first, int n_rows, int n_threads, Kernel kernel) {
    const int n_in = p.n_in, n_out = p.n_out;
    ggml_init_params params{};
    params.mem_size = 2 * p.weights.size() + static_cast<size_t>(n_rows) * n_in * 4 +
                      static_cast<size_t>(n_out) * n_rows * 4 + 16 * ggml_tensor_overhead() + ggml_graph_overhead() +
                      (1 << 20);
    ggml_context *ctx = ggml_init(params);
    const Weight weight = load_weight(ctx, p, kernel);
    ggml_tensor *x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_in, n_rows);
    std::memcpy(x->data, p.x.data() + static_cast<size_t>(first) * n_in, sizeof(float) * n_in * n_rows);
    ggml_tensor *y = kernel == Kernel::ggml ? ggml_mul_mat(ctx, weight.w, x) : qmatmul(ctx, weight.w, x, weight.packed);
    ggml_cgraph *gf = ggml_new_graph(ctx);
    ggml_build_forward_expand(gf, y);
    ggml_graph_compute_with_ctx(ctx, gf, n_threads);
    std::vector<float> out(static_cast<size_t>(n_out) * n_rows);
    std::memcpy(out.data(), y->data, out.size() * sizeof(float));
    ggml_free(ctx);
    return out;
}

// Exact product, and the largest error 8-bit activations with a per-block scale amax/127 can cause.
void reference(const Problem &p, int row, int o, double *exact, double *bound) {
    const int n_in = p.n_in;
    const int block = ggml_blck_size(p.type) == 256 ? 256 : 32;
    const float *x = p.x.data() + static_cast<size_t>(row) * n_in;
    const float *w = p.dequantized.data() + static_cast<size_t>(o) * n_in;
    *exact = 0.0;
    *bound = 0.0;
    for (int b = 0; b < n_in; b += block) {
        double amax = 0.0, abs_w = 0.0;
        for (int i = b; i < b + block; ++i) {
            *exact += static_cast<double>(w[i]) * x[i];
            amax = std::max(amax, std::fabs(static_cast<double>(x[i])));
            abs_w += std::fabs(static_cast<double>(w[i]));
        }
        *bound += abs_w * amax / 127.0 / 2.0;
    }
}

void check_type(ggml_type type, int n_in, std::mt19937 &rng, bool pack = false) {
    if (!ggml_get_type_traits(type)->to_float)
        return;
    // Packed weights come in groups of 16 rows; otherwise a count that is no multiple of the kernel's tiles.
    const int n_out = pack ? 48 : 45;
    const Problem p = make_problem(type, n_in, n_out, rng);
    ggml_tensor probe{};
    probe.type = type;
    probe.ne[0] = n_in;
    probe.ne[1] = n_out;
    probe.nb[0] = ggml_type_size(type);
    probe.nb[1] = ggml_row_size(type, n_in);
    probe.nb[2] = probe.nb[3] = probe.nb[1] * n_out;
    probe.ne[2] = probe.ne[3] = 1;
    if (!qmatmul_supports(&probe) || (pack && !qmatmul_packs(&probe))) {
        std::printf("%-5s%s not supported on this CPU: skipped\n", ggml_type_name(type), pack ? " packed" : "");
        return;
    }
    const Kernel kernel = pack ? Kernel::packed : Kernel::ours;

    // Accuracy, with all rows in one batch; ggml's matmul on the same data for comparison.
    const std::vector<float> ours = multiply(p, 0, max_rows, 2, kernel);
    const std::vector<float> theirs = multiply(p, 0, max_rows, 2, Kernel::ggml);
    double worst_ratio = 0.0, worst_ratio_ggml = 0.0;
    for (int r = 0; r < max_rows; ++r) {
        for (int o = 0; o < n_out; ++o) {
            double exact, bound;
            reference(p, r, o, &exact, &bound);
            // Float rounding of the accumulation adds a few ulps of the magnitudes summed.
            const double slack = bound + 1e-5 * (std::fabs(exact) + bound);
            const double err = std::fabs(ours[static_cast<size_t>(r) * n_out + o] - exact);
            const double err_ggml = std::fabs(theirs[static_cast<size_t>(r) * n_out + o] - exact);
            worst_ratio = std::max(worst_ratio, err / bound);
            worst_ratio_ggml = std::max(worst_ratio_ggml, err_ggml / bound);
            CHECK(err <= slack);
        }
    }
    std::printf("%-5s%s n_in %d: worst error / activation-rounding bound: ours %.3f, ggml %.3f\n", ggml_type_name(type),
                pack ? " packed" : "", n_in, worst_ratio, worst_ratio_ggml);
    CHECK(worst_ratio > 0.0);  // the activations really were rounded: the bound is not vacuous

    // Batch invariance: each row alone (1 thread) is the reference.
    std::vector<std::vector<float>> alone(max_rows);
    for (int r = 0; r < max_rows; ++r) alone[r] = multiply(p, r, 1, 1, kernel);
    int mismatches = 0;
    for (int threads = 1; threads <= 3; ++threads) {
        for (int n_rows = 1; n_rows <= max_rows; ++n_rows) {
            // Two rows also through the three-row kernel (qmatmul_two_row_kernel): alone, and as the last group of
            // ten rows (after groups of 8, or of 4 where the family takes 4 at a time).
            const bool two_row_group = n_rows == 2 || n_rows == 10;
            for (int two_rows_as : two_row_group ? std::vector<int>{2, 3} : std::vector<int>{2}) {
                qmatmul_set_two_row_kernel(two_rows_as);
                for (int first = 0; first + n_rows <= max_rows; first += std::max(1, n_rows - 1)) {
                    const std::vector<float> batch = multiply(p, first, n_rows, threads, kernel);
                    for (int r = 0; r < n_rows; ++r) {
                        if (std::memcmp(batch.data() + static_cast<size_t>(r) * n_out, alone[first + r].data(),
                                        sizeof(float) * n_out) != 0) {
                            ++mismatches;
                        }
                    }
                }
            }
            qmatmul_set_two_row_kernel(2);
        }
    }
    if (mismatches)
        std::fprintf(stderr, "%s: %d rows differ from the same row alone\n", ggml_type_name(type), mismatches);
    CHECK(mismatches == 0);
}

// ---- The same results on every architecture.

// Weights and activations from a 64-bit integer generator: no library float function (a normal distribution,
// ggml's quantizer) whose last bits could differ between machines.
struct SplitMix {
    uint64_t state;
    uint64_t next() {
        uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        return z ^ (z >> 31);
    }
};

// A normal f16 of either sign between 2^-8 and 2^-1 (no subnormals, infinities or NaNs).
uint16_t random_f16(SplitMix &rng) {
    const uint64_t v = rng.next();
    return static_cast<uint16_t>((v & 0x8000) | ((7 + v % 7) << 10) | ((v >> 8) & 0x3FF));
}

// Random bytes for every block, with valid f16 scales where the format has them.
Problem make_integer_problem(ggml_type type, int n_in, int n_out, uint64_t seed) {
    SplitMix rng{seed};
    Problem p{type, n_in, n_out, {}, {}, {}};
    p.weights.resize(ggml_row_size(type, n_in) * n_out);
    for (uint8_t &byte : p.weights) byte = static_cast<uint8_t>(rng.next());
    const size_t block = ggml_type_size(type);
    for (size_t at = 0; at < p.weights.size(); at += block) {
        std::vector<size_t> f16_offsets = {0};  // Q5_0, Q8_0: d
        if (type == GGML_TYPE_Q4_1 || type == GGML_TYPE_Q4_K)
            f16_offsets = {0, 2};  // d and m / dmin
        if (type == GGML_TYPE_Q6_K)
            f16_offsets = {208};
        for (size_t off : f16_offsets) {
            const uint16_t h = random_f16(rng);
            std::memcpy(p.weights.data() + at + off, &h, 2);
        }
    }
    p.x.resize(static_cast<size_t>(max_rows) * n_in);
    for (size_t i = 0; i < p.x.size(); ++i) {
        const int v = static_cast<int>(rng.next() % 4001) - 2000;
        p.x[i] = static_cast<float>(v) / 512.0f * (i % 97 == 0 ? 8.0f : 1.0f);
    }
    return p;
}

// "Q4_K packed 768" -> checksum of all max_rows rows in one batch, for the cases this CPU runs.
Checksums cross_arch_checksums() {
    Checksums sums;
    const std::string family = qmatmul_family();
    // The AVX-512 families sum a file-layout row's lanes in another order (and send odd block counts to AVX2).
    const bool file_layout_comparable = family == "avx2" || family == "neon" || family == "neondot";
    const int n_out = 32;
    uint64_t seed = 1;
    for (ggml_type type : {GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K}) {
        const bool k_quant = ggml_blck_size(type) == 256;
        for (int n_in : k_quant ? std::vector<int>{256, 768} : std::vector<int>{32, 800}) {
            const Problem p = make_integer_problem(type, n_in, n_out, seed++);
            ggml_tensor probe{};
            probe.type = type;
            probe.ne[0] = n_in;
            probe.ne[1] = n_out;
            probe.ne[2] = probe.ne[3] = 1;
            probe.nb[0] = ggml_type_size(type);
            probe.nb[1] = ggml_row_size(type, n_in);
            probe.nb[2] = probe.nb[3] = probe.nb[1] * n_out;
            const std::string name = std::string(ggml_type_name(type)) + " ";
            if (file_layout_comparable && qmatmul_supports(&probe))
                sums[name + "file " + std::to_string(n_in)] = fnv1a(multiply(p, 0, max_rows, 2, Kernel::ours));
            if (qmatmul_packs(&probe))
                sums[name + "packed " + std::to_string(n_in)] = fnv1a(multiply(p, 0, max_rows, 2, Kernel::packed));
        }
    }
    return sums;
}

bool is_family_name(const std::string &name) {
    for (const char *family : {"avx2", "avxvnni", "avx512", "avx512vnni", "neon", "neondot"}) {
        if (name == family)
            return true;
    }
    return false;
}

// One fused op (qmatmul_fused) over weights of both activation formats, packed and in the file layout, tile counts
// that split unevenly over the threads: each weight's columns are bitwise what qmatmul gives for it alone.
void check_fused(std::mt19937 &rng) {
    if (std::string(qmatmul_family()) == "off")
        return;
    constexpr int n_in = 768;
    struct Part {
        Problem p;
        Kernel kernel;
    };
    std::vector<Part> parts;
    parts.push_back({make_problem(GGML_TYPE_Q4_K, n_in, 48, rng), Kernel::packed});
    parts.push_back({make_problem(GGML_TYPE_Q6_K, n_in, 45, rng), Kernel::ours});
    parts.push_back({make_problem(GGML_TYPE_Q8_0, n_in, 48, rng), Kernel::packed});
    parts.push_back({make_problem(GGML_TYPE_Q4_1, n_in, 45, rng), Kernel::ours});
    for (Part &part : parts) part.p.x = parts[0].p.x;  // one input for all
    int n_out = 0;
    for (const Part &part : parts) n_out += part.p.n_out;
    for (int n_rows : {1, 2, 3, 5, 8, 11}) {
        for (int n_threads : {1, 2, 3}) {
            ggml_init_params params{};
            params.mem_size = (16 << 20) + 32 * ggml_tensor_overhead() + ggml_graph_overhead();
            ggml_context *ctx = ggml_init(params);
            ggml_tensor *x = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_in, n_rows);
            std::memcpy(x->data, parts[0].p.x.data(), sizeof(float) * n_in * n_rows);
            std::vector<ggml_tensor *> weights, packed;
            for (const Part &part : parts) {
                const Weight weight = load_weight(ctx, part.p, part.kernel);
                weights.push_back(weight.w);
                packed.push_back(weight.packed);
            }
            // Static shares, then a TileShare (room for 3 threads) over several runs of the same op: it must reset
            // itself, and every tile must be computed once more (the output is overwritten with NaN before each run).
            TileShare share(3);
            for (int run = 0; run < 4; ++run) {
                ggml_tensor *y = qmatmul_fused(ctx, weights, x, packed, run == 0 ? nullptr : &share);
                CHECK(y->ne[0] == n_out && y->ne[1] == n_rows);
                std::memset(y->data, 0xff, ggml_nbytes(y));
                ggml_cgraph *gf = ggml_new_graph(ctx);
                ggml_build_forward_expand(gf, y);
                ggml_graph_compute_with_ctx(ctx, gf, n_threads);
                int column = 0;
                bool same = true;
                for (const Part &part : parts) {
                    const std::vector<float> alone = multiply(part.p, 0, n_rows, n_threads, part.kernel);
                    for (int r = 0; r < n_rows; ++r) {
                        const float *fused_row = static_cast<const float *>(y->data) + static_cast<size_t>(r) * n_out;
                        same = same &&
                               std::memcmp(fused_row + column, alone.data() + static_cast<size_t>(r) * part.p.n_out,
                                           sizeof(float) * part.p.n_out) == 0;
                    }
                    column += part.p.n_out;
                }
                if (!same)
                    std::fprintf(stderr, "fused: %d rows, %d threads, run %d differ from the weights alone\n", n_rows,
                                 n_threads, run);
                CHECK(same);
            }
            // Refused: more weights than the op has sources for, and weights of different input widths.
            for (int bad = 0; bad < 2; ++bad) {
                std::vector<ggml_tensor *> w = weights, pk = packed;
                if (bad == 0) {
                    w.push_back(weights[0]);
                    pk.push_back(nullptr);
                } else {
                    w[1] = ggml_new_tensor_2d(ctx, GGML_TYPE_Q6_K, 2 * n_in, 16);
                }
                bool refused = false;
                try {
                    qmatmul_fused(ctx, w, x, pk);
                } catch (const std::invalid_argument &) {
                    refused = true;
                }
                CHECK(refused);
            }
            ggml_free(ctx);
        }
    }
    std::printf(
        "fused: 4 weights (Q4_K, Q8_0 packed; Q6_K, Q4_1 file layout), 1-11 rows, 1-3 threads, static and shared "
        "tiles: bitwise "
        "equal to each alone\n");
}

}  // namespace

int main(int argc, char **argv) {
    if (argc == 3 && std::string(argv[1]) == "--write-checksums") {
        if (std::string(qmatmul_family()) != "avx2") {
            std::fprintf(stderr, "--write-checksums needs ADADECODE_QMATMUL=avx2 (family now: %s)\n", qmatmul_family());
            return 2;
        }
        const char *header =
            "# Checksums of qmatmul's outputs on integer-made weights and activations\n"
            "# (tests/cpp/test_qmatmul.cpp), computed by the x86 AVX2 family: type, layout, inputs per row,\n"
            "# FNV-1a of the output floats.\n";
        return write_checksums(argv[2], header, cross_arch_checksums()) ? 0 : 1;
    }
    if (argc != 1) {
        std::fprintf(stderr, "usage: test_qmatmul [--write-checksums FILE]\n");
        return 2;
    }
    // A family this CPU lacks falls back to a narrower one, which its own test covers: ctest counts this as skipped.
    const char *wanted = std::getenv("ADADECODE_QMATMUL");
    if (wanted && is_family_name(wanted) && std::string(wanted) != qmatmul_family()) {
        std::printf("skipped: ADADECODE_QMATMUL=%s, but this CPU runs the %s family\n", wanted, qmatmul_family());
        return 77;
    }
    const char *gfni = std::getenv("ADADECODE_QMATMUL_GFNI");
    if (gfni && std::string(gfni) == "1" && std::string(qmatmul_q4_k_high_nibbles()) != "gfni") {
        std::printf("skipped: ADADECODE_QMATMUL_GFNI=1, but this CPU or family takes the high nibbles by '%s'\n",
                    qmatmul_q4_k_high_nibbles());
        return 77;
    }
    if (std::string(qmatmul_family()) != "off")
        check_checksums(ADADECODE_TEST_DATA_DIR "/qmatmul_x86_checksums.txt", cross_arch_checksums(),
                        std::string("family ") + qmatmul_family());
    std::mt19937 rng(1234);
    for (ggml_type type : {GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_K, GGML_TYPE_Q6_K}) {
        check_type(type, 768, rng);  // three 256-blocks, 24 32-blocks
    }
    // An odd number of 32-blocks: the AVX-512 kernels take blocks in pairs and hand such rows to the AVX2 ones.
    for (ggml_type type : {GGML_TYPE_Q4_1, GGML_TYPE_Q5_0, GGML_TYPE_Q8_0}) check_type(type, 800, rng);
    for (ggml_type type : {GGML_TYPE_Q4_K, GGML_TYPE_Q6_K}) {
        check_type(type, 768, rng, true);
        check_type(type, 256, rng, true);
    }
    for (ggml_type type : {GGML_TYPE_Q5_0, GGML_TYPE_Q8_0, GGML_TYPE_Q4_1}) {
        check_type(type, 768, rng, true);
        check_type(type, 800, rng, true);  // an odd number of blocks is fine packed
        check_type(type, 32, rng, true);
    }
    check_fused(rng);
    // Types the kernel does not take are left to ggml.
    ggml_tensor f16{};
    f16.type = GGML_TYPE_F16;
    CHECK(!qmatmul_supports(&f16));
    bool refused = false;
    try {
        qmatmul_set_two_row_kernel(4);
    } catch (const std::invalid_argument &) {
        refused = true;
    }
    CHECK(refused && qmatmul_two_row_kernel() == 2);
    if (g_failures)
        std::fprintf(stderr, "%d check(s) failed\n", g_failures);
    return g_failures ? 1 : 0;
}
