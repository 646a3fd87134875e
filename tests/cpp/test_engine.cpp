// Engine tests without Python (also the ones CI runs under AddressSanitizer/UBSan): batch-invariant logits,
// layer-parallel decoding identical to standard decoding with heads written here through ggml's GGUF writer, and
// clear errors for bad input. Needs $ADADECODE_CACHE/models/smollm2-135m.gguf; skips without it.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cached_model.h"
#include "check.h"
#include "engine.h"
#include "gguf.h"
#include "heads.h"
#include "model.h"
#include "vocab.h"

using namespace adadecode;

namespace {

template <typename F>
bool throws_error(F &&f, const std::string &needle) {
    try {
        f();
    } catch (const Error &e) {
        if (std::string(e.what()).find(needle) != std::string::npos) return true;
        std::fprintf(stderr, "error '%s' does not mention '%s'\n", e.what(), needle.c_str());
        return false;
    }
    return false;
}

std::string write_identity_heads(const HParams &hp, const std::vector<int> &layers, const std::string &path) {
    gguf_context *g = gguf_init_empty();
    gguf_set_val_str(g, "general.architecture", hp.arch.c_str());
    gguf_set_val_str(g, "general.type", "adapter");
    gguf_set_val_str(g, "adapter.type", "exit_heads");
    gguf_set_val_u32(g, "exit_heads.block_count", hp.n_layer);
    gguf_set_val_u32(g, "exit_heads.embedding_length", hp.n_embd);
    gguf_set_val_u32(g, "exit_heads.vocab_size", hp.n_vocab);
    gguf_set_arr_data(g, "exit_heads.layers", GGUF_TYPE_INT32, layers.data(), layers.size());
    ggml_init_params params{};
    params.mem_size = layers.size() * (ggml_tensor_overhead() + sizeof(float) * hp.n_embd * hp.n_embd) + 1024;
    ggml_context *ctx = ggml_init(params);
    for (int l : layers) {
        ggml_tensor *t = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.n_embd, hp.n_embd);
        ggml_set_name(t, ("exit." + std::to_string(l) + ".weight").c_str());
        float *d = static_cast<float *>(t->data);
        for (int i = 0; i < hp.n_embd * hp.n_embd; ++i) d[i] = (i % (hp.n_embd + 1)) == 0 ? 1.0f : 0.0f;
        gguf_add_tensor(g, t);
    }
    gguf_write_to_file(g, path.c_str(), false);
    gguf_free(g);
    ggml_free(ctx);
    return path;
}

}  // namespace

int main() {
    const std::string path = cached_smollm2_or_skip();
    if (path.empty())
        return 0;
    EngineOptions eo;
    eo.n_ctx = 256;
    eo.n_threads = 2;
    Engine engine(path, eo);
    const HParams &hp = engine.hparams();
    const std::vector<int32_t> prompt = engine.vocab().tokenize("def add(a, b):\n    return", false, true);
    CHECK(prompt.size() > 3);

    // A row's logits do not depend on the rows sharing its pass.
    const std::vector<float> all = engine.logits(prompt);
    const std::vector<float> first = engine.logits(std::vector<int32_t>(prompt.begin(), prompt.begin() + 2));
    CHECK(std::equal(first.begin(), first.end(), all.begin()));

    DecodeOptions standard;
    standard.max_tokens = 40;
    std::vector<float> standard_logits;
    standard.record_logits = &standard_logits;
    const DecodeResult a = engine.generate(prompt, standard, [](int32_t) { return true; });
    CHECK(a.tokens.size() > 0);

    const std::string heads = std::string(std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") +
                              "/adadecode_test_engine_heads.gguf";
    engine.load_heads(write_identity_heads(hp, {8, 15, 22}, heads));
    for (int max_pending : {1, 3, 8}) {
        DecodeOptions ada = standard;
        std::vector<float> ada_logits;
        ada.record_logits = &ada_logits;
        ada.layer_parallel = true;
        ada.gamma = 0.0f;
        ada.max_pending = max_pending;
        const DecodeResult b = engine.generate(prompt, ada, [](int32_t) { return true; });
        CHECK(b.tokens == a.tokens);
        CHECK(ada_logits == standard_logits);
        CHECK(b.stats.n_verified > 0);
    }
    std::remove(heads.c_str());

    // Prefix reuse: a prompt extending the last one prefills only its new tokens, with the logits of an empty cache.
    {
        auto run = [&](const std::vector<int32_t> &ids, std::vector<float> *logits) {
            DecodeOptions o = standard;
            o.max_tokens = 8;
            o.record_logits = logits;
            return engine.generate(ids, o, [](int32_t) { return true; });
        };
        std::vector<int32_t> longer = prompt;
        longer.insert(longer.end(), a.tokens.begin(), a.tokens.begin() + 10);
        std::vector<float> reused_logits, fresh_logits, loaded_logits, scratch;
        engine.reset();
        run(prompt, &scratch);
        CHECK(engine.cached_tokens().size() == prompt.size() + 7);
        const DecodeResult reused = run(longer, &reused_logits);
        CHECK(reused.stats.n_prompt_reused == static_cast<int>(prompt.size()) + 7);
        const std::string state = engine.save_state();
        const std::vector<int32_t> saved_tokens = engine.cached_tokens();
        engine.reset();
        const DecodeResult fresh = run(longer, &fresh_logits);
        CHECK(fresh.stats.n_prompt_reused == 0);
        CHECK(fresh.tokens == reused.tokens && fresh_logits == reused_logits);
        run({1, 2, 3}, &scratch);  // something else in the cache
        engine.load_state(state);
        CHECK(engine.cached_tokens() == saved_tokens);
        const DecodeResult loaded = run(longer, &loaded_logits);
        CHECK(loaded.stats.n_prompt_reused == static_cast<int>(longer.size()) - 1);
        CHECK(loaded.tokens == fresh.tokens && loaded_logits == fresh_logits);
        std::string corrupt = state;
        corrupt[corrupt.size() / 2] ^= 1;
        CHECK(throws_error([&] { engine.load_state(corrupt); }, "corrupt"));
        CHECK(throws_error([&] { engine.load_state(state.substr(0, 30)); }, "corrupt"));
        CHECK(throws_error([&] { engine.load_state("garbage"); }, "not an adadecode prompt state"));
        CHECK(engine.cached_tokens().size() == longer.size() + 7);  // refused states leave the cache alone
    }

    CHECK(throws_error([&] { engine.generate({1, 2, hp.n_vocab}, standard, [](int32_t) { return true; }); },
                       "invalid token id"));
    CHECK(throws_error([&] { engine.generate(std::vector<int32_t>(300, 5), standard, [](int32_t) { return true; }); },
                       "context"));
    CHECK(throws_error([&] { engine.generate({}, standard, [](int32_t) { return true; }); }, "empty"));
    CHECK(throws_error([&] { Engine bad("/nonexistent/model.gguf", eo); }, "no such file"));
    DecodeOptions bad_gamma = standard;
    bad_gamma.layer_parallel = true;
    bad_gamma.gamma = 1.5f;
    CHECK(throws_error([&] { engine.generate(prompt, bad_gamma, [](int32_t) { return true; }); }, "gamma"));

    // Still usable after the errors.
    const DecodeResult again = engine.generate(prompt, standard, [](int32_t) { return true; });
    CHECK(again.tokens == a.tokens);

    if (g_failures) {
        std::fprintf(stderr, "%d check(s) failed\n", g_failures);
        return 1;
    }
    std::printf("test_engine: all checks passed\n");
    return 0;
}
