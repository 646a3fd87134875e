#include "prompt_state.h"

#include <cstring>
#include <fstream>

#include "error.h"
#include "gguf_file.h"
#include "kv_cache.h"
#include "model.h"

namespace adadecode {

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

uint64_t model_fingerprint(const GgufFile &file) {
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
    return h == 0 ? 1 : h;
}

// Layout: magic, version, fingerprint, n_ctx, KV type, n_layer, n_embd_kv, n_tokens, the tokens, then per layer the
// K rows of the positions and the V columns (V is stored transposed: n_embd_kv rows of n_alloc positions), and an
// FNV-1a checksum of everything before it.
std::string save_prompt_state(const KvCache &cache, const HParams &hp, const std::vector<int32_t> &tokens,
                              uint64_t fingerprint) {
    const int n_layer = hp.n_layer;
    const int n_embd_kv = hp.n_embd_kv();
    const uint32_t n = static_cast<uint32_t>(tokens.size());
    const ggml_type type = cache.k(0)->type;
    const size_t elt = ggml_type_size(type);
    std::string out;
    out.reserve(64 + n * 4 + static_cast<size_t>(n_layer) * 2 * n * n_embd_kv * elt);
    out.append(state_magic, sizeof state_magic);
    put(out, state_version);
    put(out, fingerprint);
    put(out, static_cast<int32_t>(cache.n_ctx()));
    put(out, static_cast<int32_t>(type));
    put(out, static_cast<int32_t>(n_layer));
    put(out, static_cast<int32_t>(n_embd_kv));
    put(out, n);
    out.append(reinterpret_cast<const char *>(tokens.data()), n * sizeof(int32_t));
    for (int il = 0; il < n_layer; ++il) {
        const size_t k_bytes = static_cast<size_t>(n) * n_embd_kv * elt;
        const size_t at = out.size();
        out.resize(at + k_bytes);
        if (k_bytes) ggml_backend_tensor_get(cache.k(il), &out[at], 0, k_bytes);
        const ggml_tensor *v = cache.v(il);
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

std::vector<int32_t> load_prompt_state(const std::string &bytes, KvCache &cache, const HParams &hp,
                                       uint64_t fingerprint, const std::string &model_path) {
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
    if (r.get<uint64_t>("header") != fingerprint) {
        throw Error("the prompt state was saved from another model than '" + model_path + "'");
    }
    const int n_ctx = r.get<int32_t>("header");
    if (n_ctx != cache.n_ctx()) {
        throw Error("the prompt state was saved with n_ctx " + std::to_string(n_ctx) + ", this model has n_ctx " +
                    std::to_string(cache.n_ctx()));
    }
    const ggml_type type = cache.k(0)->type;
    const int n_layer = hp.n_layer;
    const int n_embd_kv = hp.n_embd_kv();
    if (r.get<int32_t>("header") != static_cast<int32_t>(type) || r.get<int32_t>("header") != n_layer ||
        r.get<int32_t>("header") != n_embd_kv) {
        throw Error("the prompt state's KV layout does not match this model's (saved on another device?)");
    }
    const uint32_t n = r.get<uint32_t>("header");
    if (n > static_cast<uint32_t>(cache.n_ctx())) {
        throw Error("the prompt state holds " + std::to_string(n) + " tokens, more than n_ctx");
    }
    std::vector<int32_t> tokens(n);
    std::memcpy(tokens.data(), r.take(n * sizeof(int32_t), "tokens"), n * sizeof(int32_t));
    for (int32_t t : tokens) {
        if (t < 0 || t >= hp.n_vocab) throw Error("the prompt state holds an invalid token id");
    }
    const size_t elt = ggml_type_size(type);
    const size_t k_bytes = static_cast<size_t>(n) * n_embd_kv * elt;
    const size_t col_bytes = static_cast<size_t>(n) * elt;
    if (bytes.size() - r.pos() != n_layer * (2 * k_bytes) + sizeof(uint64_t)) {
        throw Error("the prompt state's size does not match its header (corrupt)");
    }
    // Everything is checked: only now is the cache touched.
    cache.clear();
    for (int il = 0; il < n_layer; ++il) {
        if (k_bytes) ggml_backend_tensor_set(cache.k(il), r.take(k_bytes, "K rows"), 0, k_bytes);
        ggml_tensor *v = cache.v(il);
        for (int c = 0; c < n_embd_kv && col_bytes; ++c) {
            ggml_backend_tensor_set(v, r.take(col_bytes, "V columns"), c * v->nb[1], col_bytes);
        }
    }
    cache.mark_filled(0, n_layer, static_cast<int>(n));
    return tokens;
}

}  // namespace adadecode
