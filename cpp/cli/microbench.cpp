// adadecode-microbench: the cost of the building blocks the layer-parallel scheduler rests on, measured side by
// side in one process: one batched pass over all layers for 1..8 rows (relative to 1 row), a pass over one
// segment of layers, the exit check (head transform + output matrix) for the full vocabulary, and the floor under a
// batch's extra row: its multiply-accumulates at the peak rate of the kernel's dot-product instruction.
// With several setups (mmap: our matmul kernel, file: the same without packed weights, ggml: ggml's mul_mat, repack:
// ggml's extra buffer types), the model
// is loaded once per setup and they are timed alternately, row count by row count, so all see the same machine load.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "device.h"
#include "forward.h"
#include "ggml-cpp.h"
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
    std::string name;  // mmap: our kernels, file: without packing, ggml: ggml's mul_mat, repack: ggml's extra buffers
    std::unique_ptr<Model> model;
    std::unique_ptr<KvCache> cache;
    std::unique_ptr<Forward> fw;
    long rss_growth_kib = 0;
    std::vector<double> with_logits, without_logits;        // medians per row count
    std::vector<double> with_logits_min, without_logits_min;  // minima: on a shared machine noise only adds
};

double minimum(const std::vector<double> &v) { return *std::min_element(v.begin(), v.end()); }

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
            "  setups: comma-separated mmap (our matmul kernel), file (ours, Q4_K weights not packed), ggml\n"
            "  (ggml's mul_mat), repack (ggml's repacked weights), gpu (the first GPU); 0, 1 and both are the old\n"
            "  spellings of mmap, repack and mmap,repack\n");
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
            if (name != "mmap" && name != "file" && name != "ggml" && name != "repack" && name != "gpu") {
                throw Error("unknown setup '" + name + "' (expected mmap, file, ggml, repack or gpu)");
            }
            Setup s{name, nullptr, nullptr, nullptr};
            const long before = rss_kib();
            s.model = std::make_unique<Model>(argv[1], name == "repack", find_device(name == "gpu" ? "gpu" : ""),
                                              name == "mmap");
            const HParams &hp = s.model->hparams();
            s.cache = std::make_unique<KvCache>(*s.model, pos + 64);
            s.fw = std::make_unique<Forward>(*s.model, *s.cache, n_threads, name == "mmap" || name == "file");
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

        // Each row count with and without the output matrix: the latter is the deferred-layers case.
        // Repetition by repetition, every row count and setup takes its turn, so that a burst of load hits them alike.
        std::vector<std::vector<std::vector<double>>> with(8, std::vector<std::vector<double>>(setups.size()));
        std::vector<std::vector<std::vector<double>>> without = with;
        for (int r = 0; r < reps; ++r) {
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
        std::printf("{\"model\": \"%s\", \"n_layer\": %d, \"n_embd\": %d, \"threads\": %d, \"position\": %d",
                    argv[1], hp.n_layer, hp.n_embd, n_threads, pos);
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
        const double peak = qmatmul_peak_macs_per_second();
        double macs_per_row = 0.0;
        for (const ggml_tensor *w : setups[0].model->pass_weights()) macs_per_row += static_cast<double>(ggml_nelements(w));
        std::printf(",\n \"int8_peak_gmacs_per_core\": %.1f, \"macs_per_row\": %.0f", peak / 1e9, macs_per_row);
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
