// adadecode-microbench: the cost of the building blocks the layer-parallel scheduler rests on, measured side by
// side in one process: one batched pass over all layers for 1..8 rows (relative to 1 row), a pass over one
// segment of layers, and the exit check (head transform + output matrix) for the full vocabulary.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "forward.h"

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

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: adadecode-microbench MODEL.gguf [threads=2] [reps=30] [pos=200]\n");
        return 1;
    }
    const int n_threads = argc > 2 ? std::atoi(argv[2]) : 2;
    const int reps = argc > 3 ? std::atoi(argv[3]) : 30;
    const int pos = argc > 4 ? std::atoi(argv[4]) : 200;
    try {
        Model model(argv[1]);
        const HParams &hp = model.hparams();
        KvCache cache(hp, pos + 64, model.buffer_type());
        Forward fw(model, cache, n_threads);
        std::vector<int32_t> prompt(pos + 16);
        for (size_t i = 0; i < prompt.size(); ++i) prompt[i] = static_cast<int32_t>((i * 7919) % hp.n_vocab);
        PassRequest fill;
        fill.layer_end = hp.n_layer;
        fill.n_rows = pos;
        fill.tokens = prompt.data();
        PassResult out;
        fw.run(fill, &out);

        std::printf("{\"model\": \"%s\", \"n_layer\": %d, \"n_embd\": %d, \"threads\": %d, \"position\": %d,\n",
                    argv[1], hp.n_layer, hp.n_embd, n_threads, pos);
        // Each row count with and without the output matrix: the latter is the deferred-layers case.
        std::vector<double> with_logits, without_logits;
        for (int rows = 1; rows <= 8; ++rows) {
            PassRequest req;
            req.layer_end = hp.n_layer;
            req.pos0 = pos;
            req.n_rows = rows;
            req.tokens = prompt.data() + pos;
            req.logits = PassRequest::Logits::all;
            with_logits.push_back(time_pass(fw, cache, req, reps));
            req.logits = PassRequest::Logits::none;
            without_logits.push_back(time_pass(fw, cache, req, reps));
        }
        const double base = with_logits[0];
        std::printf(" \"full_pass_seconds\": {");
        for (int rows = 1; rows <= 8; ++rows) std::printf("%s\"%d\": %.6f", rows > 1 ? ", " : "", rows, with_logits[rows - 1]);
        std::printf("},\n \"relative_cost\": {");
        for (int rows = 1; rows <= 8; ++rows) {
            std::printf("%s\"%d\": %.3f", rows > 1 ? ", " : "", rows, without_logits[rows - 1] / base);
        }
        // The exit check: identity transform over the full output matrix on one row.
        ggml_init_params params{};
        params.mem_size = ggml_tensor_overhead() * 2;
        params.no_alloc = true;
        ggml_context *ctx = ggml_init(params);
        ggml_tensor *transform = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.n_embd, hp.n_embd);
        ggml_backend_buffer_t buf = ggml_backend_alloc_ctx_tensors_from_buft(ctx, model.buffer_type());
        std::vector<float> eye(static_cast<size_t>(hp.n_embd) * hp.n_embd, 0.0f);
        for (int i = 0; i < hp.n_embd; ++i) eye[static_cast<size_t>(i) * hp.n_embd + i] = 1.0f;
        ggml_backend_tensor_set(transform, eye.data(), 0, eye.size() * sizeof(float));
        HeadWeights head{transform, model.output};
        const int mid = hp.n_layer / 2;
        PassRequest first;
        first.layer_end = mid;
        first.pos0 = pos;
        first.n_rows = 1;
        first.tokens = prompt.data() + pos;
        const double no_head = time_pass(fw, cache, first, reps);
        first.head = &head;
        const double with_head = time_pass(fw, cache, first, reps);
        std::printf("},\n \"half_model_pass_seconds\": %.6f, \"exit_check_seconds\": %.6f, "
                    "\"exit_check_relative_to_token\": %.3f}\n",
                    no_head, with_head - no_head, (with_head - no_head) / base);
        ggml_backend_buffer_free(buf);
        ggml_free(ctx);
    } catch (const std::exception &e) {
        std::fprintf(stderr, "adadecode-microbench: error: %s\n", e.what());
        return 1;
    }
    return 0;
}
