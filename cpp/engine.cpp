#include "engine.h"

#include <thread>

#include "device.h"
#include "vocab.h"

namespace adadecode {

namespace {
constexpr int teacher_forcing_batch = 512;
}

Engine::Engine(const std::string &model_path, const EngineOptions &options) {
    if (options.n_ctx <= 0) throw Error("n_ctx must be positive, got " + std::to_string(options.n_ctx));
    if (options.n_threads < 0) throw Error("n_threads must be >= 1 (or 0 for all cores), got " +
                                           std::to_string(options.n_threads));
    const int n_threads = options.n_threads > 0
                              ? options.n_threads
                              : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));
    model_ = std::make_unique<Model>(model_path, options.repack, find_device(options.device));
    vocab_ = Vocab::from_gguf(model_->file());
    if (vocab_->n_tokens() > model_->hparams().n_vocab) {
        throw Error("'" + model_path + "': the tokenizer has " + std::to_string(vocab_->n_tokens()) +
                    " tokens but the output layer only " + std::to_string(model_->hparams().n_vocab));
    }
    cache_ = std::make_unique<KvCache>(*model_, options.n_ctx);
    forward_ = std::make_unique<Forward>(*model_, *cache_, n_threads);
    decoder_ = std::make_unique<Decoder>(*model_, *cache_, *forward_, nullptr);
    if (!options.heads_path.empty()) load_heads(options.heads_path);
}

Engine::~Engine() = default;

const HParams &Engine::hparams() const { return model_->hparams(); }
int Engine::n_ctx() const { return cache_->n_ctx(); }
int Engine::n_threads() const { return forward_->n_threads(); }
std::string Engine::device() const {
    return model_->device() ? ggml_backend_dev_name(model_->device()) : "CPU (mapped file)";
}

void Engine::load_heads(const std::string &path) {
    auto heads = std::make_unique<ExitHeads>(path, *model_);
    decoder_ = std::make_unique<Decoder>(*model_, *cache_, *forward_, heads.get());
    heads_ = std::move(heads);
}

DecodeResult Engine::generate(const std::vector<int32_t> &prompt, const DecodeOptions &options,
                              const TokenCallback &on_token) {
    const Vocab &vocab = *vocab_;
    return decoder_->generate(prompt, options, [&vocab](int32_t t) { return vocab.is_eog(t); }, on_token);
}

void Engine::check_ids(const std::vector<int32_t> &ids) const {
    if (ids.empty()) throw Error("no token ids given");
    if (static_cast<int>(ids.size()) > cache_->n_ctx()) {
        throw Error(std::to_string(ids.size()) + " tokens do not fit in the context of " +
                    std::to_string(cache_->n_ctx()));
    }
    for (int32_t id : ids) {
        if (id < 0 || id >= hparams().n_vocab) {
            throw Error("invalid token id " + std::to_string(id) + " (vocabulary size " +
                        std::to_string(hparams().n_vocab) + ")");
        }
    }
}

void Engine::teacher_force(const std::vector<int32_t> &ids, PassRequest request,
                           const std::function<void(size_t start, int rows, const PassResult &)> &consume) {
    check_ids(ids);
    cache_->clear();
    PassResult pass;
    for (size_t start = 0; start < ids.size(); start += teacher_forcing_batch) {
        request.layer_end = hparams().n_layer;
        request.pos0 = static_cast<int>(start);
        request.n_rows = static_cast<int>(std::min<size_t>(teacher_forcing_batch, ids.size() - start));
        request.tokens = ids.data() + start;
        request.prompt = true;
        forward_->run(request, &pass);
        consume(start, request.n_rows, pass);
    }
    cache_->clear();
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
    teacher_force(ids, request, [&](size_t start, int rows, const PassResult &pass) {
        size_t captured = 0;
        for (size_t li = 0; li < layers.size(); ++li) {
            float *dst = out.data() + (li * n + start) * d;
            if (layers[li] > 0) {
                std::copy(pass.captured[captured].begin(), pass.captured[captured].end(), dst);
                ++captured;
                continue;
            }
            // Layer 0 is the token embedding itself.
            model_->embed(ids.data() + start, rows, dst);
        }
    });
    return out;
}

std::vector<float> Engine::logits(const std::vector<int32_t> &ids) {
    const size_t v = hparams().n_vocab;
    std::vector<float> out(ids.size() * v);
    PassRequest request;
    request.logits = PassRequest::Logits::all;
    teacher_force(ids, request, [&](size_t start, int, const PassResult &pass) {
        std::copy(pass.logits.begin(), pass.logits.end(), out.begin() + start * v);
    });
    return out;
}

}  // namespace adadecode
