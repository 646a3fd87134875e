#include "engine.h"

#include "cpu_threads.h"
#include "device.h"
#include "engine_impl.h"
#include "heads.h"
#include "layer_split.h"
#include "model.h"
#include "prompt_state.h"
#include "thread_governor.h"
#include "vocab.h"

namespace adadecode {

namespace {
constexpr int teacher_forcing_batch = 512;
}


Engine::Engine(const std::string &model_path, const EngineOptions &options) : impl_(std::make_unique<Impl>()) {
    if (options.n_ctx <= 0) throw Error("n_ctx must be positive, got " + std::to_string(options.n_ctx));
    if (options.n_threads < 0)
        throw Error("n_threads must be >= 1 (or 0 for one per core), got " + std::to_string(options.n_threads));
    const int n_threads = options.n_threads > 0 ? options.n_threads : default_thread_count();
    if (!options.split_devices.empty()) {
        if (options.repack || !options.device.empty()) {
            throw Error("a model split across devices takes neither repack nor a device");
        }
        std::vector<ggml_backend_dev_t> devices;
        for (const std::string &name : options.split_devices) devices.push_back(find_device(name));
        const std::vector<float> proportions =
            options.tensor_split.empty() ? free_memory_proportions(devices) : options.tensor_split;
        impl_->model = std::make_unique<Model>(model_path, devices, proportions);
    } else if (!options.tensor_split.empty()) {
        throw Error("tensor_split needs a model split across devices (more than one device)");
    } else {
        impl_->model = std::make_unique<Model>(model_path, options.repack, find_device(options.device));
    }
    impl_->vocab = Vocab::from_gguf(impl_->model->file());
    if (impl_->vocab->n_tokens() > hparams().n_vocab) {
        throw Error("'" + model_path + "': the tokenizer has " + std::to_string(impl_->vocab->n_tokens()) +
                    " tokens but the output layer only " + std::to_string(hparams().n_vocab));
    }
    impl_->cache = std::make_unique<KvCache>(*impl_->model, options.n_ctx);
    if (impl_->model->split().empty()) {
        impl_->forward = std::make_unique<Forward>(*impl_->model, *impl_->cache, n_threads);
        if (options.n_threads == 0 && adapt_threads_by_default())
            impl_->forward->adapt_threads_to_load();
    } else {
        impl_->split = std::make_unique<SplitRunner>(*impl_->model, *impl_->cache, n_threads);
        if (options.n_threads == 0 && adapt_threads_by_default())
            impl_->split->adapt_threads_to_load();
    }
    impl_->decoder = std::make_unique<Decoder>(impl_->runner(), nullptr);
    if (!options.heads_path.empty()) load_heads(options.heads_path);
}

Engine::~Engine() = default;

const HParams &Engine::hparams() const { return impl_->model->hparams(); }
const Vocab &Engine::vocab() const { return *impl_->vocab; }
const Model &Engine::model() const { return *impl_->model; }
const ExitHeads *Engine::heads() const { return impl_->heads.get(); }
int Engine::n_ctx() const { return impl_->cache->n_ctx(); }
int Engine::n_threads() const { return impl_->split ? impl_->split->n_threads() : impl_->forward->n_threads(); }
int Engine::threads_in_use() const {
    return impl_->split ? impl_->split->threads_in_use() : impl_->forward->threads_in_use();
}
std::string Engine::device() const {
    const Model &m = *impl_->model;
    if (!m.split().empty()) {
        // e.g. "CPU[0,10)+RPC0[10,20)+RPC1[20,30)"
        std::string out;
        for (const LayerRange &r : m.split()) {
            out += (out.empty() ? "" : "+") + std::string(ggml_backend_dev_name(r.device)) + "[" +
                   std::to_string(r.layer_begin) + "," + std::to_string(r.layer_end) + ")";
        }
        return out;
    }
    return m.device() ? ggml_backend_dev_name(m.device()) : "CPU (mapped file)";
}

void Engine::load_heads(const std::string &path) {
    auto heads = std::make_unique<ExitHeads>(path, *impl_->model);
    impl_->decoder = std::make_unique<Decoder>(impl_->runner(), heads.get());
    impl_->heads = std::move(heads);
}

DecodeResult Engine::generate(const std::vector<int32_t> &prompt, const DecodeOptions &options,
                              const TokenCallback &on_token) {
    Impl &m = *impl_;
    const Vocab &vocab = *m.vocab;
    // The longest common prefix with what the cache holds, leaving the last prompt token to run for its logits.
    size_t n_reuse = 0;
    const size_t limit = std::min(m.cached_tokens.size(), prompt.empty() ? 0 : prompt.size() - 1);
    while (n_reuse < limit && m.cached_tokens[n_reuse] == prompt[n_reuse]) ++n_reuse;
    m.cached_tokens.resize(n_reuse);
    m.cache->truncate(static_cast<int>(n_reuse));
    // From here every position >= n_reuse the decoder writes holds a token of `prompt` or one it ran after it.
    // The emitted tokens are verified, so the prompt followed by them is the decoder's sequence as far as the
    // cache is valid; rows it ran beyond them (drafts, early tokens) are dropped, which is always safe.
    std::vector<int32_t> ran = prompt;
    auto track = [&] {
        const size_t n = std::min(ran.size(), static_cast<size_t>(m.cache->valid()));
        m.cached_tokens.assign(ran.begin(), ran.begin() + static_cast<std::ptrdiff_t>(n));
    };
    try {
        DecodeResult r = m.decoder->generate(
            prompt, options, [&vocab](int32_t t) { return vocab.is_eog(t); },
            [&](int32_t token) {
                ran.push_back(token);
                return on_token(token);
            },
            static_cast<int>(n_reuse));
        track();
        r.stats.mode = options.mode();
        r.stats.device = device();
        r.stats.threads = threads_in_use();
        r.stats.peak_rss_mib = process_peak_rss_mib();
        return r;
    } catch (...) {
        track();
        throw;
    }
}

const std::vector<int32_t> &Engine::cached_tokens() const { return impl_->cached_tokens; }

void Engine::reset() { impl_->forget_cache(); }

uint64_t Engine::fingerprint() const {
    if (impl_->fingerprint == 0) impl_->fingerprint = model_fingerprint(impl_->model->file());
    return impl_->fingerprint;
}

std::string Engine::save_state() const {
    return save_prompt_state(*impl_->cache, hparams(), impl_->cached_tokens, fingerprint());
}

void Engine::load_state(const std::string &bytes) {
    const uint64_t fp = fingerprint();
    impl_->cached_tokens = load_prompt_state(bytes, *impl_->cache, hparams(), fp, impl_->model->file().path());
}

void Engine::Impl::check_ids(const std::vector<int32_t> &ids) const {
    if (ids.empty()) throw Error("no token ids given");
    if (static_cast<int>(ids.size()) > cache->n_ctx()) {
        throw Error(std::to_string(ids.size()) + " tokens do not fit in the context of " +
                    std::to_string(cache->n_ctx()));
    }
    for (int32_t id : ids) {
        if (id < 0 || id >= model->hparams().n_vocab) {
            throw Error("invalid token id " + std::to_string(id) + " (vocabulary size " +
                        std::to_string(model->hparams().n_vocab) + ")");
        }
    }
}

void Engine::Impl::teacher_force(const std::vector<int32_t> &ids, PassRequest request,
                                   const std::function<void(size_t start, int rows, const PassResult &)> &consume) {
    check_ids(ids);
    forget_cache();
    PassResult pass;
    for (size_t start = 0; start < ids.size(); start += teacher_forcing_batch) {
        request.layer_end = model->hparams().n_layer;
        request.pos0 = static_cast<int>(start);
        request.n_rows = static_cast<int>(std::min<size_t>(teacher_forcing_batch, ids.size() - start));
        request.tokens = ids.data() + start;
        request.prompt = true;
        runner().run(request, &pass);
        consume(start, request.n_rows, pass);
    }
    forget_cache();
}

std::vector<float> Engine::hidden_states(const std::vector<int32_t> &ids, const std::vector<int> &layers) {
    for (int l : layers) {
        if (l < 0 || l > hparams().n_layer) {
            throw Error("layer " + std::to_string(l) + " is outside 0.." + std::to_string(hparams().n_layer));
        }
    }
    const size_t n = ids.size(), d = hparams().n_embd;
    std::vector<float> out(layers.size() * n * d);
    PassRequest request;
    for (int l : layers) {
        if (l > 0) request.capture_layers.push_back(l);
    }
    impl_->teacher_force(ids, request, [&](size_t start, int rows, const PassResult &pass) {
        size_t captured = 0;
        for (size_t li = 0; li < layers.size(); ++li) {
            float *dst = out.data() + (li * n + start) * d;
            if (layers[li] > 0) {
                std::copy(pass.captured[captured].begin(), pass.captured[captured].end(), dst);
                ++captured;
                continue;
            }
            // Layer 0 is the token embedding itself.
            impl_->model->embed(ids.data() + start, rows, dst);
        }
    });
    return out;
}

std::vector<float> Engine::logits(const std::vector<int32_t> &ids) {
    const size_t v = hparams().n_vocab;
    std::vector<float> out(ids.size() * v);
    PassRequest request;
    request.logits = PassRequest::Logits::all;
    impl_->teacher_force(ids, request, [&](size_t start, int, const PassResult &pass) {
        std::copy(pass.logits.begin(), pass.logits.end(), out.begin() + start * v);
    });
    return out;
}

std::vector<float> Engine::head_logits(int index, const std::vector<float> &hidden, int n_rows) {
    const ExitHeads *heads = impl_->heads.get();
    if (!heads) throw Error("no exit heads are loaded");
    if (index < 0 || index >= static_cast<int>(heads->layers().size())) {
        throw Error("exit head index " + std::to_string(index) + " is outside 0.." +
                    std::to_string(static_cast<int>(heads->layers().size()) - 1));
    }
    const size_t d = hparams().n_embd;
    if (n_rows < 0 || hidden.size() != static_cast<size_t>(n_rows) * d) {
        throw Error("head_logits needs n_rows x " + std::to_string(d) + " hidden-state values, got " +
                    std::to_string(hidden.size()) + " for " + std::to_string(n_rows) + " rows");
    }
    const size_t k = heads->head_vocab_size();
    std::vector<float> out(static_cast<size_t>(n_rows) * k);
    // A pass without layers runs the head on its one input row, the last row of a decode pass; no KV is written.
    PassRequest request;
    request.layer_begin = request.layer_end = heads->layers()[index];
    request.n_rows = 1;
    request.head = &heads->head(index);
    PassResult pass;
    for (int r = 0; r < n_rows; ++r) {
        request.hidden = hidden.data() + static_cast<size_t>(r) * d;
        impl_->runner().run(request, &pass);
        std::copy(pass.head_logits.begin(), pass.head_logits.end(), out.begin() + static_cast<size_t>(r) * k);
    }
    return out;
}

}  // namespace adadecode
