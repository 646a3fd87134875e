// Batch invariance of the forward pass, the property greedy parity rests on: a row's logits must be bitwise the same
// whether its pass holds 1 row or k rows (k = 2..8, 12, 20), with weights mmapped or repacked into ggml's extra buffer types.
// Runs on SmolLM2 ($ADADECODE_CACHE/models/smollm2-135m.gguf; skips without it) or on the models given as arguments.
// With --report it prints the largest difference per batch size instead of stopping at the first mismatch.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "cached_model.h"
#include "check.h"
#include "forward.h"

using namespace adadecode;

namespace {

constexpr int prefix = 20;
constexpr int max_rows = 20;  // above 16 rows ggml's repacked kernels switch to a 16-row loop

// Max |a - b| over the row, and whether every float is bitwise equal.
std::pair<double, bool> compare(const float *a, const float *b, int n) {
    double worst = 0.0;
    for (int i = 0; i < n; ++i) worst = std::max(worst, std::fabs(static_cast<double>(a[i]) - b[i]));
    return {worst, std::memcmp(a, b, sizeof(float) * n) == 0};
}

void check_model(const std::string &path, bool repack, bool report) {
    Model model(path, repack);
    const HParams &hp = model.hparams();
    KvCache cache(model, 256);
    Forward fw(model, cache, 2);
    std::vector<int32_t> tokens(prefix + max_rows);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i * 7919 + 13) % hp.n_vocab);

    PassRequest fill;
    fill.layer_end = hp.n_layer;
    fill.n_rows = prefix;
    fill.tokens = tokens.data();
    PassResult out;
    fw.run(fill, &out);

    // Reference: one row per pass after the shared prefix.
    std::vector<std::vector<float>> reference;
    for (int i = 0; i < max_rows; ++i) {
        PassRequest one;
        one.layer_end = hp.n_layer;
        one.pos0 = prefix + i;
        one.n_rows = 1;
        one.tokens = tokens.data() + prefix + i;
        one.logits = PassRequest::Logits::last;
        fw.run(one, &out);
        reference.push_back(out.logits);
    }
    std::printf("%s (%s, %d tensors repacked):", path.c_str(), repack ? "repack" : "mmap", model.n_repacked());
    if (repack && model.n_repacked() == 0) {
        std::printf(" same as mmap\n");
        return;
    }
    for (int k : {2, 3, 4, 5, 6, 7, 8, 12, max_rows}) {
        cache.truncate(prefix);
        PassRequest batch;
        batch.layer_end = hp.n_layer;
        batch.pos0 = prefix;
        batch.n_rows = k;
        batch.tokens = tokens.data() + prefix;
        batch.logits = PassRequest::Logits::all;
        fw.run(batch, &out);
        double worst = 0.0;
        bool equal = true;
        for (int r = 0; r < k; ++r) {
            const auto [diff, same] = compare(out.logits.data() + static_cast<size_t>(r) * hp.n_vocab,
                                              reference[r].data(), hp.n_vocab);
            worst = std::max(worst, diff);
            equal = equal && same;
        }
        std::printf(" %d:%s", k, equal ? "equal" : ("max|diff|=" + std::to_string(worst)).c_str());
        if (!report) CHECK(equal);
    }
    std::printf("\n");
}

}  // namespace

int main(int argc, char **argv) {
    bool report = false;
    std::vector<std::string> paths;
    for (int i = 1; i < argc; ++i) {
        if (std::strcmp(argv[i], "--report") == 0) {
            report = true;
        } else {
            paths.emplace_back(argv[i]);
        }
    }
    if (paths.empty()) {
        const std::string path = cached_smollm2_or_skip();
        if (path.empty())
            return 0;
        paths.push_back(path);
    }
    for (const std::string &path : paths) {
        for (bool repack : {false, true}) check_model(path, repack, report);
    }
    if (g_failures) {
        std::fprintf(stderr, "%d check(s) failed\n", g_failures);
        return 1;
    }
    std::printf("test_batch_invariance: all checks passed\n");
    return 0;
}
