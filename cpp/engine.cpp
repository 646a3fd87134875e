#include "engine.h"

#include <cstring>
#include <fstream>
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
    // The longest common prefix with what the cache holds, leaving the last prompt token to run for its logits.
    size_t n_reuse = 0;
    const size_t limit = std::min(cached_tokens_.size(), prompt.empty() ? 0 : prompt.size() - 1);
    while (n_reuse < limit && cached_tokens_[n_reuse] == prompt[n_reuse]) ++n_reuse;
    cached_tokens_.resize(n_reuse);
    cache_->truncate(static_cast<int>(n_reuse));
    // From here every position >= n_reuse the decoder writes holds a token of `prompt` or one it ran after it.
    // The emitted tokens are verified, so the prompt followed by them is the decoder's sequence as far as the
    // cache is valid; rows it ran beyond them (drafts, early tokens) are dropped, which is always safe.
    std::vector<int32_t> ran = prompt;
    auto track = [&] {
        const size_t n = std::min(ran.size(), static_cast<size_t>(cache_->valid()));
        cached_tokens_.assign(ran.begin(), ran.begin() + static_cast<std::ptrdiff_t>(n));
    };
    try {
        DecodeResult r = decoder_->generate(
            prompt, options, [&vocab](int32_t t) { return vocab.is_eog(t); },
            [&](int32_t token) {
                ran.push_back(token);
                return on_token(token);
            },
            static_cast<int>(n_reuse));
        track();
        return r;
    } catch (...) {
        track();
        throw;
    }
}

void Engine::reset() {
    cached_tokens_.clear();
    cache_->clear();
}

namespace {

constexpr char state_magic[8] = {'A', 'D', 'A', 'S', 'T', 'A', 'T', 'E'};
constexpr uint32_t state_version = 1;

uint64_t fnv1a(const void *data, size_t n, uint64_t h = 1469598103934665603ull) {
    const auto *p = static_cast<const unsigned char *>(data);
    for (size_t i = 0; i < n; ++i) {
        h ^= p[i];
        h *= 1099511628211ull;
    }
    return h;
}

template <typename T> void put(std::string &out, const T &value) {
    out.append(reinterpret_cast<const char *>(&value), sizeof(T));
}

// Reads the fields of a state in order, refusing to run past its end.
class StateReader {
public:
    explicit StateReader(const std::string &bytes) : bytes_(bytes) {}
    template <typename T> T get(const char *what) {
        T value;
        std::memcpy(&value, take(sizeof(T), what), sizeof(T));
        return value;
    }
    const char *take(size_t n, const char *what) {
        if (n > bytes_.size() - pos_) {
            throw Error(std::string("the state is truncated or corrupt (it ends inside the ") + what + ")");
        }
        const char *p = bytes_.data() + pos_;
        pos_ += n;
        return p;
    }
    size_t pos() const { return pos_; }

private:
    const std::string &bytes_;
    size_t pos_ = 0;
};

}  // namespace

uint64_t Engine::fingerprint() const {
    if (fingerprint_ != 0) return fingerprint_;
    const GgufFile &file = model_->file();
    const uint64_t size = file.file_size();
    uint64_t h = fnv1a(&size, sizeof size);
    std::ifstream in(file.path(), std::ios::binary);
    if (!in) throw Error("cannot reopen '" + file.path() + "' to fingerprint the model");
    char sample[64];
    for (const GgufFile::TensorInfo &t : file.tensors()) {
        h = fnv1a(t.name.data(), t.name.size(), h);
        h = fnv1a(&t.type, sizeof t.type, h);
        h = fnv1a(t.ne, sizeof t.ne, h);
        h = fnv1a(&t.offset, sizeof t.offset, h);
        // A fine-tune shares the directory: a few bytes from the start and the middle of each tensor tell it apart.
        for (size_t at : {t.offset, t.offset + t.nbytes / 2}) {
            const size_t n = std::min(sizeof sample, t.nbytes - (at - t.offset));
            in.seekg(static_cast<std::streamoff>(at));
            if (!in.read(sample, static_cast<std::streamsize>(n))) {
                throw Error("cannot read '" + file.path() + "' to fingerprint the model");
            }
            h = fnv1a(sample, n, h);
        }
    }
    fingerprint_ = h == 0 ? 1 : h;
    return fingerprint_;
}

// Layout: magic, version, fingerprint, n_ctx, KV type, n_layer, n_embd_kv, n_tokens, the tokens, then per layer the
// K rows of the positions and the V columns (V is stored transposed: n_embd_kv rows of n_alloc positions), and an
// FNV-1a checksum of everything before it.
std::string Engine::save_state() const {
    const int n_layer = hparams().n_layer;
    const int n_embd_kv = hparams().n_embd_kv();
    const uint32_t n = static_cast<uint32_t>(cached_tokens_.size());
    const ggml_type type = cache_->k(0)->type;
    const size_t elt = ggml_type_size(type);
    std::string out;
    out.reserve(64 + n * 4 + static_cast<size_t>(n_layer) * 2 * n * n_embd_kv * elt);
    out.append(state_magic, sizeof state_magic);
    put(out, state_version);
    put(out, fingerprint());
    put(out, static_cast<int32_t>(cache_->n_ctx()));
    put(out, static_cast<int32_t>(type));
    put(out, static_cast<int32_t>(n_layer));
    put(out, static_cast<int32_t>(n_embd_kv));
    put(out, n);
    out.append(reinterpret_cast<const char *>(cached_tokens_.data()), n * sizeof(int32_t));
    for (int il = 0; il < n_layer; ++il) {
        const size_t k_bytes = static_cast<size_t>(n) * n_embd_kv * elt;
        const size_t at = out.size();
        out.resize(at + k_bytes);
        if (k_bytes) ggml_backend_tensor_get(cache_->k(il), &out[at], 0, k_bytes);
        const ggml_tensor *v = cache_->v(il);
        const size_t col_bytes = static_cast<size_t>(n) * elt;
        for (int c = 0; c < n_embd_kv && col_bytes; ++c) {
            const size_t vat = out.size();
            out.resize(vat + col_bytes);
            ggml_backend_tensor_get(v, &out[vat], c * v->nb[1], col_bytes);
        }
    }
    put(out, fnv1a(out.data(), out.size()));
    return out;
}

void Engine::load_state(const std::string &bytes) {
    StateReader r(bytes);
    if (bytes.size() < sizeof state_magic + sizeof(uint64_t) ||
        std::memcmp(r.take(sizeof state_magic, "header"), state_magic, sizeof state_magic) != 0) {
        throw Error("not an adadecode prompt state (bad magic bytes)");
    }
    uint64_t stored_sum;
    std::memcpy(&stored_sum, bytes.data() + bytes.size() - sizeof stored_sum, sizeof stored_sum);
    if (fnv1a(bytes.data(), bytes.size() - sizeof stored_sum) != stored_sum) {
        throw Error("the prompt state is corrupt (checksum mismatch)");
    }
    const auto version = r.get<uint32_t>("header");
    if (version != state_version) {
        throw Error("prompt state format version " + std::to_string(version) + " is not supported (expected " +
                    std::to_string(state_version) + ")");
    }
    if (r.get<uint64_t>("header") != fingerprint()) {
        throw Error("the prompt state was saved from another model than '" + model_->file().path() + "'");
    }
    const int n_ctx = r.get<int32_t>("header");
    if (n_ctx != cache_->n_ctx()) {
        throw Error("the prompt state was saved with n_ctx " + std::to_string(n_ctx) + ", this model has n_ctx " +
                    std::to_string(cache_->n_ctx()));
    }
    const ggml_type type = cache_->k(0)->type;
    const int n_layer = hparams().n_layer;
    const int n_embd_kv = hparams().n_embd_kv();
    if (r.get<int32_t>("header") != static_cast<int32_t>(type) || r.get<int32_t>("header") != n_layer ||
        r.get<int32_t>("header") != n_embd_kv) {
        throw Error("the prompt state's KV layout does not match this model's (saved on another device?)");
    }
    const uint32_t n = r.get<uint32_t>("header");
    if (n > static_cast<uint32_t>(cache_->n_ctx())) {
        throw Error("the prompt state holds " + std::to_string(n) + " tokens, more than n_ctx");
    }
    std::vector<int32_t> tokens(n);
    std::memcpy(tokens.data(), r.take(n * sizeof(int32_t), "tokens"), n * sizeof(int32_t));
    for (int32_t t : tokens) {
        if (t < 0 || t >= hparams().n_vocab) throw Error("the prompt state holds an invalid token id");
    }
    const size_t elt = ggml_type_size(type);
    const size_t k_bytes = static_cast<size_t>(n) * n_embd_kv * elt;
    const size_t col_bytes = static_cast<size_t>(n) * elt;
    if (bytes.size() - r.pos() != n_layer * (2 * k_bytes) + sizeof(uint64_t)) {
        throw Error("the prompt state's size does not match its header (corrupt)");
    }
    // Everything is checked: only now is the cache touched.
    cached_tokens_.clear();
    cache_->clear();
    for (int il = 0; il < n_layer; ++il) {
        if (k_bytes) ggml_backend_tensor_set(cache_->k(il), r.take(k_bytes, "K rows"), 0, k_bytes);
        ggml_tensor *v = cache_->v(il);
        for (int c = 0; c < n_embd_kv && col_bytes; ++c) {
            ggml_backend_tensor_set(v, r.take(col_bytes, "V columns"), c * v->nb[1], col_bytes);
        }
    }
    cache_->mark_filled(0, n_layer, static_cast<int>(n));
    cached_tokens_ = std::move(tokens);
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
    reset();
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
