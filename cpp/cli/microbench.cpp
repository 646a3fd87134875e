// adadecode-microbench: the cost of the building blocks the layer-parallel scheduler rests on, measured side by
// side in one process: one batched pass over all layers for 1..8 rows (relative to 1 row), a pass over one
// segment of layers, the exit check (head transform + output matrix) for the full vocabulary, and the floor under a
// batch's extra row: its multiply-accumulates at the peak rate of the kernel's dot-product instruction.
// With several setups (mmap: our matmul kernel, static: the same without TileShare, file: the same without packed
// weights, ggml: ggml's mul_mat, repack: ggml's extra buffer types), the model is loaded once per setup and they are
// timed alternately, row count by row count, so all see the same machine load.
//
// The roofline: a pass over k rows must read every weight once (weight_bytes_per_pass at read_gbs, the machine's
// streaming read rate with the same threads, the highest of reads before, amid and after the passes) and do k rows'
// multiply-accumulates (at int8_peak_gmacs, the kernel family's dot-product peak on all threads). A kernel at the
// roofline takes the larger of the two, so rows[k].roofline_fraction = max(bytes / read rate, k * MACs / peak) /
// measured seconds (1: at the roof; the measured pass also runs attention, norms and ggml's scheduling, which the floor
// leaves out).
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "device.h"
#include "forward.h"
#include "ggml-cpp.h"
#include "huge_pages.h"
#include "ops/attention.h"
#include "ops/qmatmul.h"

using namespace adadecode;

namespace {

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

double time_pass(Forward &fw, KvCache &cache, const PassRequest &req, int reps) {
    std::vector<double> t;
    PassResult out;
    for (int r = 0; r < reps; ++r) {
        cache.truncate(req.pos0);
        const auto start = std::chrono::steady_clock::now();
        fw.run(req, &out);
        t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    return median(t);
}

}  // namespace

namespace {

long rss_kib() {
    FILE *f = std::fopen("/proc/self/status", "r");
    if (!f) return -1;
    char line[256];
    long kib = -1;
    while (std::fgets(line, sizeof(line), f)) {
        if (std::sscanf(line, "VmRSS: %ld kB", &kib) == 1) break;
    }
    std::fclose(f);
    return kib;
}

struct Setup {
    std::string name;  // mmap: our kernels, static: without TileShare, file: without packing, ggml, repack, gpu
    std::unique_ptr<Model> model;
    std::unique_ptr<KvCache> cache;
    std::unique_ptr<Forward> fw;
    long rss_growth_kib = 0;
    std::vector<double> with_logits, without_logits;        // medians per row count
    std::vector<double> with_logits_min, without_logits_min;  // minima: on a shared machine noise only adds
};

double minimum(const std::vector<double> &v) { return *std::min_element(v.begin(), v.end()); }

#if defined(__x86_64__)
// Four independent sums, so that the loads, not the adds' latency, set the pace. With prefetch_bytes > 0 each
// 128-byte step also asks for the two cache lines that far ahead, as the matmul kernels do: on some machines the
// hardware prefetcher alone keeps too few lines in flight, and a roof below what the kernels reach is no roof.
__attribute__((target("avx2"))) uint64_t sum_words_avx2(const uint64_t *p, size_t n, size_t prefetch_bytes) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        if (prefetch_bytes) {
            const char *ahead = reinterpret_cast<const char *>(p + i) + prefetch_bytes;
            _mm_prefetch(ahead, _MM_HINT_T0);
            _mm_prefetch(ahead + 64, _MM_HINT_T0);
        }
        a0 = _mm256_add_epi64(a0, _mm256_load_si256(reinterpret_cast<const __m256i *>(p + i)));
        a1 = _mm256_add_epi64(a1, _mm256_load_si256(reinterpret_cast<const __m256i *>(p + i + 4)));
        a2 = _mm256_add_epi64(a2, _mm256_load_si256(reinterpret_cast<const __m256i *>(p + i + 8)));
        a3 = _mm256_add_epi64(a3, _mm256_load_si256(reinterpret_cast<const __m256i *>(p + i + 12)));
    }
    alignas(32) uint64_t lanes[4];
    _mm256_store_si256(reinterpret_cast<__m256i *>(lanes),
                       _mm256_add_epi64(_mm256_add_epi64(a0, a1), _mm256_add_epi64(a2, a3)));
    uint64_t total = lanes[0] + lanes[1] + lanes[2] + lanes[3];
    for (; i < n; ++i) total += p[i];
    return total;
}

#endif

uint64_t sum_words(const uint64_t *p, size_t n) {
    uint64_t a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        a0 += p[i];
        a1 += p[i + 1];
        a2 += p[i + 2];
        a3 += p[i + 3];
    }
    for (; i < n; ++i) a0 += p[i];
    return a0 + a1 + a2 + a3;
}

// The streaming read rate in GB/s (1e9 bytes) with n_threads threads, each summing its share of a buffer far larger
// than any cache: the best of three reads per prefetch distance (none, and the kernels' range), after one that pages
// the buffer in. The buffer asks for 2 MiB pages, as the model's packed weights do (Model::pack_weights), so that both
// stream through the same kind of pages (on AVX-512 Zen 4, 2 threads, the loop read 35.6 GB/s either way, while a
// plain loop without prefetching gained 10 % from them).
double read_gbs(int n_threads, size_t bytes) {
    const HugePageBuffer buffer = allocate_huge_pages(bytes);
    if (!buffer)
        throw Error("cannot allocate " + std::to_string(bytes >> 20) + " MiB for the read-bandwidth measurement");
    std::memset(buffer.get(), 1, bytes);
    const uint64_t *words = static_cast<const uint64_t *>(buffer.get());
    const size_t n_words = bytes / sizeof(uint64_t);
    const size_t share = (n_words / n_threads + 15) / 16 * 16;  // whole 128-byte chunks: aligned loads
#if defined(__x86_64__)
    const bool avx2 = __builtin_cpu_supports("avx2");
#else
    const bool avx2 = false;
#endif
    std::vector<uint64_t> sums(n_threads);
    double best = 0.0;
    const size_t prefetch_distances[] = {0, 1024, 2048, 4096};
    for (int rep = 0; rep < (avx2 ? 13 : 4); ++rep) {
        const size_t prefetch_bytes = avx2 && rep > 0 ? prefetch_distances[(rep - 1) % 4] : 0;
        std::vector<std::thread> threads;
        const auto start = std::chrono::steady_clock::now();
        for (int t = 0; t < n_threads; ++t) {
            threads.emplace_back([&, t]() {
                const size_t first = std::min(n_words, share * t), n = std::min(n_words, first + share) - first;
#if defined(__x86_64__)
                sums[t] = avx2 ? sum_words_avx2(words + first, n, prefetch_bytes) : sum_words(words + first, n);
#else
                (void)prefetch_bytes;
                sums[t] = sum_words(words + first, n);  // the compiler vectorises it (NEON on aarch64)
#endif
            });
        }
        for (std::thread &th : threads) th.join();
        const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
        uint64_t total = 0;
        for (uint64_t s : sums) total += s;
        if (total != n_words * 0x0101010101010101ull)  // also keeps the sums from being optimized away
            throw Error("internal: the read-bandwidth sum is wrong");
        if (rep > 0)
            best = std::max(best, static_cast<double>(bytes) / seconds / 1e9);
    }
    return best;
}

// The kernel family's dot-product peak with every thread running it at once (multiply-accumulates per second).
double peak_all_threads(int n_threads) {
    std::vector<double> rates(n_threads);
    std::vector<std::thread> threads;
    for (int t = 0; t < n_threads; ++t) threads.emplace_back([&rates, t]() { rates[t] = qmatmul_peak_macs_per_second(); });
    for (std::thread &th : threads) th.join();
    double total = 0.0;
    for (double r : rates) total += r;
    return total;
}

std::string cpu_model() {
    FILE *f = std::fopen("/proc/cpuinfo", "r");
    if (!f) return "unknown";
    char line[512];
    std::string model = "unknown";
    while (std::fgets(line, sizeof(line), f)) {
        if (std::strncmp(line, "model name", 10) == 0) {
            const char *colon = std::strchr(line, ':');
            if (colon) {
                model = colon + 1;
                model.erase(0, model.find_first_not_of(" \t"));
                model.erase(model.find_last_not_of(" \t\n") + 1);
            }
            break;
        }
    }
    std::fclose(f);
    return model;
}

// For JSON strings: the CPU model and a path are the only free text printed.
std::string json_escape(const std::string &s) {
    std::string out;
    for (char c : s) {
        if (c == '"' || c == '\\') out += '\\';
        if (static_cast<unsigned char>(c) < 0x20) continue;
        out += c;
    }
    return out;
}

// The bytes of weights a pass over all layers reads: the packed copy where there is one, else the tensor itself.
double weight_bytes_per_pass(const Model &model) {
    double bytes = 0.0;
    for (const ggml_tensor *w : model.pass_weights()) {
        const ggml_tensor *p = model.packed(w);
        bytes += static_cast<double>(ggml_nbytes(p ? p : w));
    }
    return bytes;
}

struct Roofline {
    double read_gbs = 0.0;       // streaming read, GB/s
    double peak_macs = 0.0;      // all threads, per second
    double macs_per_row = 0.0;
};

// rows[k]: the full pass with logits over k rows (minimum over the repetitions), relative to one row, as GB/s of
// weights read, and as a fraction of the roofline.
void print_rows(const Setup &s, const Roofline &roof) {
    const double bytes = weight_bytes_per_pass(*s.model);
    std::printf("\"weight_bytes_per_pass\": %.0f, \"rows\": {", bytes);
    for (size_t i = 0; i < s.with_logits_min.size(); ++i) {
        const double seconds = s.with_logits_min[i];
        const double memory = roof.read_gbs > 0.0 ? bytes / (roof.read_gbs * 1e9) : 0.0;
        const double arithmetic = roof.peak_macs > 0.0 ? (i + 1) * roof.macs_per_row / roof.peak_macs : 0.0;
        std::printf("%s\n    \"%zu\": {\"seconds\": %.6f, \"relative_cost\": %.3f, \"gbs\": %.2f, "
                    "\"memory_floor_seconds\": %.6f, \"arithmetic_floor_seconds\": %.6f, \"roofline_fraction\": %.3f}",
                    i ? "," : "", i + 1, seconds, seconds / s.with_logits_min[0], bytes / seconds / 1e9, memory,
                    arithmetic, std::max(memory, arithmetic) / seconds);
    }
    std::printf("}");
}

std::string join_numbers(const std::vector<double> &v, const char *fmt) {
    std::string out;
    char buf[64];
    for (double x : v) {
        std::snprintf(buf, sizeof(buf), fmt, x);
        out += (out.empty() ? "" : ", ") + std::string(buf);
    }
    return out;
}

double time_once(Forward &fw, KvCache &cache, const PassRequest &req) {
    PassResult out;
    cache.truncate(req.pos0);
    const auto start = std::chrono::steady_clock::now();
    fw.run(req, &out);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void print_seconds(const char *key, const std::vector<double> &v, double scale, const char *fmt) {
    std::printf("  \"%s\": {", key);
    for (size_t i = 0; i < v.size(); ++i) {
        std::printf("%s\"%zu\": ", i ? ", " : "", i + 1);
        std::printf(fmt, v[i] / scale);
    }
    std::printf("}");
}

}  // namespace

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(
            stderr,
            "usage: adadecode-microbench MODEL.gguf [threads=2] [reps=30] [pos=200] [setups=mmap]\n"
            "  setups: comma-separated mmap (our matmul kernel), static (the same, each thread keeping to its share\n"
            "  of a matmul's tiles: no TileShare), file (ours, Q4_K weights not packed), ggml (ggml's mul_mat),\n"
            "  repack (ggml's repacked weights), gpu (the first GPU); 0, 1 and both are the old spellings of mmap,\n"
            "  repack and mmap,repack\n");
        return 1;
    }
    const int n_threads = argc > 2 ? std::atoi(argv[2]) : 2;
    const int reps = argc > 3 ? std::atoi(argv[3]) : 30;
    const int pos = argc > 4 ? std::atoi(argv[4]) : 200;
    std::string setup_list = argc > 5 ? argv[5] : "mmap";
    if (setup_list == "0") setup_list = "mmap";
    if (setup_list == "1") setup_list = "repack";
    if (setup_list == "both") setup_list = "mmap,repack";
    try {
        std::vector<Setup> setups;
        // The setup about to be timed runs alone: the others' thread pools would otherwise spin on the same cores.
        auto pause_all_but = [&setups](const Setup &timed) {
            for (const Setup &other : setups) {
                if (&other != &timed)
                    other.fw->pause_threads();
            }
        };
        for (size_t start = 0; start <= setup_list.size();) {
            size_t end = setup_list.find(',', start);
            if (end == std::string::npos) end = setup_list.size();
            const std::string name = setup_list.substr(start, end - start);
            start = end + 1;
            if (name != "mmap" && name != "static" && name != "file" && name != "ggml" && name != "repack" &&
                name != "gpu") {
                throw Error("unknown setup '" + name + "' (expected mmap, static, file, ggml, repack or gpu)");
            }
            Setup s{name, nullptr, nullptr, nullptr};
            const long before = rss_kib();
            const bool ours = name == "mmap" || name == "static" || name == "file";
            s.model = std::make_unique<Model>(argv[1], name == "repack", find_device(name == "gpu" ? "gpu" : ""),
                                              name == "mmap" || name == "static");
            const HParams &hp = s.model->hparams();
            s.cache = std::make_unique<KvCache>(*s.model, pos + 64);
            s.fw = std::make_unique<Forward>(*s.model, *s.cache, n_threads, ours);
            if (ours)
                s.fw->set_tile_sharing(name != "static");
            setups.push_back(std::move(s));
            Setup &b = setups.back();
            std::vector<int32_t> fill_tokens(pos);
            for (int i = 0; i < pos; ++i) fill_tokens[i] = static_cast<int32_t>((i * 7919) % hp.n_vocab);
            PassRequest fill;
            fill.layer_end = hp.n_layer;
            fill.n_rows = pos;
            fill.tokens = fill_tokens.data();
            fill.prompt = true;
            PassResult out;
            b.fw->run(fill, &out);
            b.rss_growth_kib = rss_kib() - before;  // after one pass: the mapped pages have been touched
        }
        const HParams &hp = setups[0].model->hparams();
        std::vector<int32_t> prompt(pos + 16);
        for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 7919) % hp.n_vocab);

        // The read roof is measured before, amid and after the passes, and the highest taken: on a shared VM it moves
        // with the other tenants' memory traffic (AMD EPYC Zen 4, 2026-12-07: one-row passes streamed 31-48 GB/s from
        // one run to the next, and one measurement after the passes put a pass at 1.6x its roof).
        std::vector<double> read_samples;
        constexpr size_t read_bytes = size_t(1) << 30;
        auto sample_read_rate = [&]() {
            for (const Setup &other : setups) other.fw->pause_threads();
            read_samples.push_back(read_gbs(n_threads, read_bytes));
        };
        sample_read_rate();

        // Each row count with and without the output matrix: the latter is the deferred-layers case.
        // Repetition by repetition, every row count and setup takes its turn, so that a burst of load hits them alike.
        std::vector<std::vector<std::vector<double>>> with(8, std::vector<std::vector<double>>(setups.size()));
        std::vector<std::vector<std::vector<double>>> without = with;
        for (int r = 0; r < reps; ++r) {
            if (r == reps / 2 && r > 0)
                sample_read_rate();
            for (int rows = 1; rows <= 8; ++rows) {
                for (size_t i = 0; i < setups.size(); ++i) {
                    pause_all_but(setups[i]);
                    PassRequest req;
                    req.layer_end = hp.n_layer;
                    req.pos0 = pos;
                    req.n_rows = rows;
                    req.tokens = prompt.data() + pos;
                    req.logits = PassRequest::Logits::all;
                    with[rows - 1][i].push_back(time_once(*setups[i].fw, *setups[i].cache, req));
                    req.logits = PassRequest::Logits::none;
                    without[rows - 1][i].push_back(time_once(*setups[i].fw, *setups[i].cache, req));
                }
            }
        }
        for (int rows = 1; rows <= 8; ++rows) {
            for (size_t i = 0; i < setups.size(); ++i) {
                setups[i].with_logits.push_back(median(with[rows - 1][i]));
                setups[i].without_logits.push_back(median(without[rows - 1][i]));
                setups[i].with_logits_min.push_back(minimum(with[rows - 1][i]));
                setups[i].without_logits_min.push_back(minimum(without[rows - 1][i]));
            }
        }
        // The last read sample, then the dot-product peak: both after the passes, so that the passes' timings see no
        // warmer machine.
        sample_read_rate();
        Roofline roof;
        roof.read_gbs = *std::max_element(read_samples.begin(), read_samples.end());
        roof.peak_macs = peak_all_threads(n_threads);
        for (const ggml_tensor *w : setups[0].model->pass_weights())
            roof.macs_per_row += static_cast<double>(ggml_nelements(w));
        std::printf("{\"model\": \"%s\", \"n_layer\": %d, \"n_embd\": %d, \"threads\": %d, \"position\": %d, "
                    "\"reps\": %d,\n \"cpu_model\": \"%s\", \"qmatmul_family\": \"%s\", \"attention_family\": \"%s\", "
                    "\"setups\": [",
                    json_escape(argv[1]).c_str(), hp.n_layer, hp.n_embd, n_threads, pos, reps,
                    json_escape(cpu_model()).c_str(), qmatmul_family(), cpu_attention_family());
        for (size_t i = 0; i < setups.size(); ++i) std::printf("%s\"%s\"", i ? ", " : "", setups[i].name.c_str());
        std::printf(
            "],\n \"read_gbs\": %.2f, \"read_gbs_samples\": [%s], \"read_bytes\": %zu, \"int8_peak_gmacs\": %.1f, "
            "\"macs_per_row\": %.0f,\n "
            "\"two_row_kernel\": %d, \"prefetch_min_rows\": %d, \"q4_k_scale\": \"%s\", "
            "\"q4_k_high_nibbles\": \"%s\",\n ",
            roof.read_gbs, join_numbers(read_samples, "%.2f").c_str(), read_bytes, roof.peak_macs / 1e9,
            roof.macs_per_row, qmatmul_two_row_kernel(), qmatmul_prefetch_min_rows(), qmatmul_q4_k_scale(),
            qmatmul_q4_k_high_nibbles());
        print_rows(setups[0], roof);
        for (Setup &s : setups) {
            pause_all_but(s);
            Model &model = *s.model;
            // The exit check: identity transform over the full output matrix on one row.
            ggml_init_params params{};
            params.mem_size = ggml_tensor_overhead() * 2;
            params.no_alloc = true;
            const ggml_context_ptr ctx(ggml_init(params));
            ggml_tensor *transform = ggml_new_tensor_2d(ctx.get(), GGML_TYPE_F32, hp.n_embd, hp.n_embd);
            const ggml_backend_buffer_ptr buf(ggml_backend_alloc_ctx_tensors_from_buft(ctx.get(), model.buffer_type()));
            std::vector<float> eye(static_cast<size_t>(hp.n_embd) * hp.n_embd, 0.0f);
            for (int i = 0; i < hp.n_embd; ++i) eye[static_cast<size_t>(i) * hp.n_embd + i] = 1.0f;
            ggml_backend_tensor_set(transform, eye.data(), 0, eye.size() * sizeof(float));
            HeadWeights head{transform, model.output};
            PassRequest first;
            first.layer_end = hp.n_layer / 2;
            first.pos0 = pos;
            first.n_rows = 1;
            first.tokens = prompt.data() + pos;
            const double no_head = time_pass(*s.fw, *s.cache, first, reps);
            first.head = &head;
            const double with_head = time_pass(*s.fw, *s.cache, first, reps);

            const double base = s.with_logits[0];
            std::printf(
                ",\n \"%s\": {\"repacked_tensors\": %d, \"repacked_mib\": %.1f, \"packed_mib\": %.1f, "
                "\"rss_growth_mib\": %.1f,\n",
                s.name.c_str(), model.n_repacked(), model.repacked_bytes() / 1048576.0,
                model.packed_bytes() / 1048576.0, s.rss_growth_kib / 1024.0);
            std::printf("  ");
            print_rows(s, roof);
            std::printf(",\n");
            print_seconds("full_pass_seconds", s.with_logits, 1.0, "%.6f");
            std::printf(",\n");
            print_seconds("relative_cost", s.without_logits, base, "%.3f");
            std::printf(",\n");
            print_seconds("full_pass_seconds_min", s.with_logits_min, 1.0, "%.6f");
            std::printf(",\n");
            print_seconds("relative_cost_min", s.without_logits_min, s.with_logits_min[0], "%.3f");
            std::printf(",\n  \"half_model_pass_seconds\": %.6f, \"exit_check_seconds\": %.6f, "
                        "\"exit_check_relative_to_token\": %.3f}",
                        no_head, with_head - no_head, (with_head - no_head) / base);
        }
        // The floor under a batch: each extra row's multiply-accumulates at the kernel's peak rate on every thread.
        const double peak = roof.peak_macs / n_threads;
        const double macs_per_row = roof.macs_per_row;
        std::printf(",\n \"int8_peak_gmacs_per_core\": %.1f", peak / 1e9);
        if (peak > 0.0) {
            const double floor_seconds = macs_per_row / (peak * n_threads);
            std::printf(", \"extra_row_floor_seconds\": %.6f, \"extra_row_floor_relative\": %.3f", floor_seconds,
                        floor_seconds / setups[0].with_logits_min[0]);
        }
        std::printf("}\n");
    } catch (const std::exception &e) {
        std::fprintf(stderr, "adadecode-microbench: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
