#include "model.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <thread>

#include "ggml-alloc.h"
#include "buffer_placement.h"
#include "huge_pages.h"
#include "ggml-cpu.h"
#include "layer_split.h"
#include "ops/qmatmul.h"
#include "repack.h"

namespace adadecode {

namespace {

std::string shape_string(const int64_t *ne, int n) {
    std::string s = "[";
    for (int i = 0; i < n; ++i) {
        s += (i ? ", " : "") + std::to_string(ne[i]);
    }
    return s + "]";
}

int checked_positive(const GgufFile &f, const std::string &key, int64_t value, int64_t max_value) {
    if (value <= 0 || value > max_value) {
        throw Error("'" + f.path() + "': " + key + " = " + std::to_string(value) + " is out of range (1.." +
                    std::to_string(max_value) + ")");
    }
    return static_cast<int>(value);
}

// A type the CPU backend can multiply by (and gather rows of): f32, or a type that dequantizes and has a dot
// product whose activation format it can produce. Integer and removed types would abort inside ggml.
bool matrix_type(ggml_type type) {
    if (type == GGML_TYPE_F32) return true;
    const ggml_type_traits_cpu *cpu = ggml_get_type_traits_cpu(type);
    return ggml_get_type_traits(type)->to_float && cpu->vec_dot &&
           (cpu->vec_dot_type == GGML_TYPE_F32 || ggml_get_type_traits_cpu(cpu->vec_dot_type)->from_float);
}

// Drops ggml's debug-level messages while alive, passing the others to the callback that was installed before.
class QuietDebugLog {
public:
    QuietDebugLog() {
        ggml_log_get(&previous_, &previous_data_);
        ggml_log_set(&QuietDebugLog::log, this);
    }
    ~QuietDebugLog() { ggml_log_set(previous_, previous_data_); }
    QuietDebugLog(const QuietDebugLog &) = delete;
    QuietDebugLog &operator=(const QuietDebugLog &) = delete;

private:
    static void log(ggml_log_level level, const char *text, void *data) {
        auto *self = static_cast<QuietDebugLog *>(data);
        if (level != GGML_LOG_LEVEL_DEBUG && level != GGML_LOG_LEVEL_CONT && self->previous_) {
            self->previous_(level, text, self->previous_data_);
        }
    }
    ggml_log_callback previous_ = nullptr;
    void *previous_data_ = nullptr;
};

}  // namespace

Model::Model(const std::string &path, bool repack, ggml_backend_dev_t device, bool pack) : device_(device) {
    if (device && repack) {
        throw Error("repacking applies to the CPU computing from the mapped file, not to a device");
    }
    file_ = std::make_unique<GgufFile>(path);
    read_hparams();
    map_weights();
    bind_tensors();
    if (device) {
        copy_weights_to_device();
    } else {
        place_weights(repack);
        if (pack && !repack)
            pack_weights();
    }
}

Model::Model(const std::string &path, const std::vector<ggml_backend_dev_t> &devices,
             const std::vector<float> &proportions) {
    file_ = std::make_unique<GgufFile>(path);
    read_hparams();
    split_ = split_layers(hp_.n_layer, devices, proportions);
    device_ = split_.back().device;
    map_weights();
    bind_tensors();
    if (rope_freqs && split_.size() > 1) {
        // Every layer's rope reads it, and a tensor lives in one device's memory.
        throw Error("'" + path + "': splitting a model with rope_freqs.weight across devices is not supported yet");
    }
    copy_weights_to_split();
}

Model::Mapping::~Mapping() {
    if (data) munmap(data, size);
}

void Model::map_weights() {
    const std::string &path = file_->path();
    const int fd = open(path.c_str(), O_RDONLY);
    if (fd < 0) {
        throw Error("cannot open '" + path + "' for reading");
    }
    void *data = mmap(nullptr, file_->file_size(), PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (data == MAP_FAILED) {
        throw Error("cannot mmap '" + path + "'");
    }
    mapping_.data = data;
    mapping_.size = file_->file_size();
}

void Model::place_weights(bool repack) {
    const std::string &path = file_->path();
    for (const GgufFile::TensorInfo &info : file_->tensors()) {
        const ggml_tensor *t = ggml_get_tensor(file_->tensor_meta(), info.name.c_str());
        if (!t) {
            throw Error("'" + path + "': tensor '" + info.name + "' is missing from the directory");
        }
        if (ggml_nbytes(t) != info.nbytes) {
            throw Error("'" + path + "': tensor '" + info.name + "' has an inconsistent size");
        }
    }
    std::vector<std::pair<ggml_tensor *, ggml_backend_buffer_type_t>> moved;
    if (repack) {
        moved = choose_extra_buffer_types(matmul_weights());
        std::stable_sort(moved.begin(), moved.end(), [](const auto &x, const auto &y) { return x.second < y.second; });
    }
    weights_buffer_.reset(ggml_backend_cpu_buffer_from_ptr(mapping_.data, mapping_.size));
    for (const GgufFile::TensorInfo &info : file_->tensors()) {
        ggml_tensor *t = ggml_get_tensor(file_->tensor_meta(), info.name.c_str());
        const bool is_moved =
            std::any_of(moved.begin(), moved.end(), [t](const auto &m) { return m.first == t; });
        if (is_moved) {
            continue;
        }
        if (ggml_backend_tensor_alloc(weights_buffer_.get(), t, static_cast<char *>(mapping_.data) + info.offset) !=
            GGML_STATUS_SUCCESS) {
            throw Error("'" + path + "': tensor '" + info.name + "' cannot be mapped");
        }
    }
    // One buffer per extra type; setting a tensor there converts it from the file layout (ggml logs every tensor
    // it converts at debug level: dropped here).
    QuietDebugLog quiet;
    for (size_t i = 0; i < moved.size();) {
        ggml_backend_buffer_type_t buft = moved[i].second;
        std::vector<ggml_tensor *> tensors;
        for (size_t j = i; j < moved.size() && moved[j].second == buft; ++j) tensors.push_back(moved[j].first);
        extra_buffers_.push_back(place_tensors(buft, tensors));
        if (!extra_buffers_.back()) {
            throw Error("'" + path + "': cannot allocate " + std::to_string(placement_bytes(buft, tensors) >> 20) +
                        " MiB for repacked weights");
        }
        ggml_backend_buffer_set_usage(extra_buffers_.back().get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        i += tensors.size();
        for (ggml_tensor *t : tensors) {
            const GgufFile::TensorInfo *info = file_->find_tensor(t->name);
            ggml_backend_tensor_set(t, static_cast<const char *>(mapping_.data) + info->offset, 0, info->nbytes);
            release_file_pages(t);
            ++n_repacked_;
        }
    }
}

// The file pages of a weight that lives in a copy are not read again by the forward pass: let them go (they stay in
// the page cache; a later host-side read, say dequantize, maps them in again).
void Model::release_file_pages(const ggml_tensor *t) {
    const GgufFile::TensorInfo *info = file_->find_tensor(t->name);
    const uintptr_t page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
    const uintptr_t begin = (reinterpret_cast<uintptr_t>(mapping_.data) + info->offset + page - 1) / page * page;
    const uintptr_t end = (reinterpret_cast<uintptr_t>(mapping_.data) + info->offset + info->nbytes) / page * page;
    if (end > begin) {
        madvise(reinterpret_cast<void *>(begin), end - begin, MADV_DONTNEED);
    }
}

void Model::pack_weights() {
    // Every weight a pass multiplies, a tied output matrix (SmolLM2's) included: unlike ggml's repack, packing
    // copies, so the embedding lookup keeps reading the file's layout through the mapping. The output matrix is the
    // largest of most small models; a Q6_K one of 1536 x 151936 took 7.4 ms from the file layout and 4.1 ms packed
    // (adadecode-kernelbench q6_k {0,1} 1536 151936 2).
    std::vector<const ggml_tensor *> weights;
    for (const ggml_tensor *t : pass_weights()) {
        if (qmatmul_packs(t))
            weights.push_back(t);
    }
    if (weights.empty())
        return;
    ggml_init_params params{ggml_tensor_overhead() * weights.size(), nullptr, true};
    packed_ctx_.reset(ggml_init(params));
    if (!packed_ctx_)
        throw Error("cannot allocate the context of the packed weights");
    for (const ggml_tensor *t : weights) {
        ggml_tensor *p =
            ggml_new_tensor_1d(packed_ctx_.get(), GGML_TYPE_I8, static_cast<int64_t>(qmatmul_packed_size(t)));
        ggml_format_name(p, "%s.packed", t->name);
        packed_[t] = p;
    }
    packed_buffer_.reset(ggml_backend_alloc_ctx_tensors_from_buft(packed_ctx_.get(), ggml_backend_cpu_buffer_type()));
    if (!packed_buffer_) {
        throw Error("'" + file_->path() + "': cannot allocate memory for the packed weights");
    }
    ggml_backend_buffer_set_usage(packed_buffer_.get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    ggml_backend_buffer_t packed = packed_buffer_.get();
    request_huge_pages(ggml_backend_buffer_get_base(packed), ggml_backend_buffer_get_size(packed));
    // A few hundred MB for the 1.5B model: spread over the cores, it costs little next to reading the file.
    std::atomic<size_t> next{0};
    auto work = [&]() {
        for (size_t i = next++; i < weights.size(); i = next++) {
            qmatmul_pack(weights[i], file_data(weights[i]), packed_.at(weights[i])->data);
            release_file_pages(weights[i]);
        }
    };
    const size_t n_workers =
        std::min<size_t>(weights.size(), std::max(1u, std::min(8u, std::thread::hardware_concurrency())));
    std::vector<std::thread> workers;
    for (size_t i = 1; i < n_workers; ++i) workers.emplace_back(work);
    work();
    for (std::thread &t : workers) t.join();
}

ggml_tensor *Model::packed(const ggml_tensor *w) const {
    auto found = packed_.find(w);
    return found == packed_.end() ? nullptr : found->second;
}

// Refuses up front what cannot fit: a remote (RPC) device's allocator would only fail once the bytes are sent, a
// GPU's after a partial copy. Devices that report no memory (0) are left to their allocator.
void Model::check_fits(ggml_backend_dev_t device, size_t needed, const std::string &what) const {
    size_t free_bytes = 0, total_bytes = 0;
    ggml_backend_dev_memory(device, &free_bytes, &total_bytes);
    if (total_bytes > 0 && needed > free_bytes) {
        throw Error("'" + file_->path() + "': the weights " + what + "need " + std::to_string(needed >> 20) +
                    " MiB but " + ggml_backend_dev_name(device) + " (" +
                    ggml_backend_dev_description(device) + ") has " + std::to_string(free_bytes >> 20) +
                    " MiB free");
    }
}

void Model::copy_weights_to_split() {
    const std::string &path = file_->path();
    // Which range each tensor goes to: a layer's to the range holding the layer, the output's to the last, the rest
    // (untied token embeddings) to the first.
    std::vector<std::vector<ggml_tensor *>> placed(split_.size());
    for (const GgufFile::TensorInfo &info : file_->tensors()) {
        ggml_tensor *t = ggml_get_tensor(file_->tensor_meta(), info.name.c_str());
        if (!t || ggml_nbytes(t) != info.nbytes) {
            throw Error("'" + path + "': tensor '" + info.name + "' has an inconsistent size");
        }
        size_t range = 0;
        int layer = -1;
        if (std::sscanf(info.name.c_str(), "blk.%d.", &layer) == 1) {
            while (range + 1 < split_.size() && layer >= split_[range].layer_end) ++range;
        } else if (info.name.rfind("output", 0) == 0 || t == output) {
            range = split_.size() - 1;  // tied embeddings are the output matrix (the lookup reads the file anyway)
        }
        placed[range].push_back(t);
    }
    // Every range is checked before any weight is sent anywhere.
    for (size_t r = 0; r < split_.size(); ++r) {
        check_fits(split_[r].device, placement_bytes(ggml_backend_dev_buffer_type(split_[r].device), placed[r]),
                   "of layers [" + std::to_string(split_[r].layer_begin) + ", " + std::to_string(split_[r].layer_end) +
                       ")" + (r + 1 == split_.size() ? " and the output " : " "));
    }
    for (size_t r = 0; r < split_.size(); ++r) {
        ggml_backend_dev_t dev = split_[r].device;
        ggml_backend_buffer_type_t buft = ggml_backend_dev_buffer_type(dev);
        split_buffers_.push_back(place_tensors(buft, placed[r]));
        if (!split_buffers_.back()) {
            throw Error("'" + path + "': cannot allocate " + std::to_string(placement_bytes(buft, placed[r]) >> 20) +
                        " MiB for the weights on " + ggml_backend_dev_name(dev) + " (" +
                        ggml_backend_dev_description(dev) + ")");
        }
        ggml_backend_buffer_set_usage(split_buffers_.back().get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
        for (ggml_tensor *t : placed[r]) ggml_backend_tensor_set(t, file_data(t), 0, ggml_nbytes(t));
    }
}

ggml_backend_buffer_type_t Model::layer_buffer_type(int il) const {
    for (const LayerRange &r : split_) {
        if (il < r.layer_end) return ggml_backend_dev_buffer_type(r.device);
    }
    return buffer_type();
}

void Model::copy_weights_to_device() {
    const std::string &path = file_->path();
    ggml_backend_buffer_type_t buft = ggml_backend_dev_buffer_type(device_);
    const size_t needed = ggml_backend_alloc_ctx_tensors_from_buft_size(file_->tensor_meta(), buft);
    check_fits(device_, needed, "");
    weights_buffer_.reset(ggml_backend_alloc_ctx_tensors_from_buft(file_->tensor_meta(), buft));
    if (!weights_buffer_) {
        throw Error("'" + path + "': cannot allocate " + std::to_string(mapping_.size >> 20) + " MiB for the weights on " +
                    ggml_backend_dev_name(device_) + " (" + ggml_backend_dev_description(device_) + ")");
    }
    ggml_backend_buffer_set_usage(weights_buffer_.get(), GGML_BACKEND_BUFFER_USAGE_WEIGHTS);
    for (const GgufFile::TensorInfo &info : file_->tensors()) {
        ggml_tensor *t = ggml_get_tensor(file_->tensor_meta(), info.name.c_str());
        if (!t || ggml_nbytes(t) != info.nbytes) {
            throw Error("'" + path + "': tensor '" + info.name + "' has an inconsistent size");
        }
        ggml_backend_tensor_set(t, static_cast<const char *>(mapping_.data) + info.offset, 0, info.nbytes);
    }
}

std::vector<ggml_tensor *> Model::matmul_weights() const {
    // Only the operands of mul_mat: the token embeddings feed get_rows and must keep the file layout.
    std::vector<ggml_tensor *> out;
    for (const LayerWeights &l : layers) {
        for (ggml_tensor *t : {l.wq, l.wk, l.wv, l.wo, l.ffn_gate, l.ffn_up, l.ffn_down}) {
            out.push_back(t);
        }
    }
    if (output != tok_embd) {
        out.push_back(output);
    }
    return out;
}

std::vector<const ggml_tensor *> Model::pass_weights() const {
    const std::vector<ggml_tensor *> matmul = matmul_weights();
    std::vector<const ggml_tensor *> out(matmul.begin(), matmul.end());
    if (output == tok_embd) out.push_back(output);  // tied: multiplied too, though it is no matmul-only weight
    return out;
}

size_t Model::pass_bytes() const {
    size_t bytes = 0;
    for (const ggml_tensor *w : pass_weights()) bytes += ggml_nbytes(w);
    return bytes;
}

const void *Model::file_data(const ggml_tensor *t) const {
    const GgufFile::TensorInfo *info = file_->find_tensor(t->name);
    if (!info) {
        throw Error("internal: tensor '" + std::string(t->name) + "' is not in '" + file_->path() + "'");
    }
    return static_cast<const char *>(mapping_.data) + info->offset;
}

void Model::embed(const int32_t *ids, int n, float *dst) const {
    const int64_t d = hp_.n_embd;
    const char *rows = static_cast<const char *>(file_data(tok_embd));
    for (int r = 0; r < n; ++r) {
        const char *row = rows + static_cast<size_t>(ids[r]) * tok_embd->nb[1];
        if (tok_embd->type == GGML_TYPE_F32) {
            std::memcpy(dst + r * d, row, d * sizeof(float));
        } else {
            ggml_get_type_traits(tok_embd->type)->to_float(row, dst + r * d, d);
        }
    }
}

size_t Model::repacked_bytes() const {
    size_t total = 0;
    for (const ggml_backend_buffer_ptr &b : extra_buffers_) total += ggml_backend_buffer_get_size(b.get());
    return total;
}

ggml_backend_buffer_type_t Model::buffer_type() const {
    return device_ ? ggml_backend_dev_buffer_type(device_) : ggml_backend_cpu_buffer_type();
}

void Model::read_hparams() {
    const GgufFile &f = *file_;
    hp_.arch = f.get_string("general.architecture");
    if (hp_.arch != "llama" && hp_.arch != "qwen2" && hp_.arch != "qwen3") {
        throw Error("'" + f.path() + "': unsupported architecture '" + hp_.arch + "' (supported: llama, qwen2, qwen3)");
    }
    const std::string a = hp_.arch + ".";
    hp_.n_layer = checked_positive(f, a + "block_count", f.get_int(a + "block_count"), 1024);
    hp_.n_embd = checked_positive(f, a + "embedding_length", f.get_int(a + "embedding_length"), 1 << 16);
    hp_.n_ff = checked_positive(f, a + "feed_forward_length", f.get_int(a + "feed_forward_length"), 1 << 20);
    hp_.n_head = checked_positive(f, a + "attention.head_count", f.get_int(a + "attention.head_count"), 4096);
    hp_.n_head_kv = checked_positive(f, a + "attention.head_count_kv",
                                     f.get_int(a + "attention.head_count_kv", hp_.n_head), hp_.n_head);
    if (hp_.n_head % hp_.n_head_kv != 0) {
        throw Error("'" + f.path() + "': head_count " + std::to_string(hp_.n_head) +
                    " is not a multiple of head_count_kv " + std::to_string(hp_.n_head_kv));
    }
    const int64_t default_head_dim = hp_.n_embd / hp_.n_head;
    hp_.head_dim = checked_positive(f, a + "attention.key_length",
                                    f.get_int(a + "attention.key_length", default_head_dim), 1 << 12);
    if (f.get_int(a + "attention.value_length", hp_.head_dim) != hp_.head_dim) {
        throw Error("'" + f.path() + "': attention.value_length differs from key_length (unsupported)");
    }
    if (hp_.head_dim % 2 != 0) {
        throw Error("'" + f.path() + "': head dimension " + std::to_string(hp_.head_dim) + " is odd");
    }
    const size_t n_tokens = f.get_array_size("tokenizer.ggml.tokens");
    hp_.n_vocab = checked_positive(f, a + "vocab_size",
                                   f.get_int(a + "vocab_size", static_cast<int64_t>(n_tokens)), 1 << 24);
    hp_.n_ctx_train = checked_positive(f, a + "context_length", f.get_int(a + "context_length", 4096), 1 << 24);
    hp_.rms_eps = static_cast<float>(f.get_float(a + "attention.layer_norm_rms_epsilon", 1e-6));
    if (!(hp_.rms_eps > 0.0f && hp_.rms_eps < 1.0f)) {
        throw Error("'" + f.path() + "': layer_norm_rms_epsilon = " + std::to_string(hp_.rms_eps) +
                    " is not in (0, 1)");
    }
    hp_.rope_theta = static_cast<float>(f.get_float(a + "rope.freq_base", 10000.0));
    if (!(hp_.rope_theta > 0.0f) || !std::isfinite(hp_.rope_theta)) {
        throw Error("'" + f.path() + "': rope.freq_base must be a positive number");
    }
    hp_.rope_n_dims = checked_positive(f, a + "rope.dimension_count",
                                       f.get_int(a + "rope.dimension_count", hp_.head_dim), hp_.head_dim);
    if (hp_.rope_n_dims % 2 != 0) {
        throw Error("'" + f.path() + "': rope.dimension_count " + std::to_string(hp_.rope_n_dims) + " is odd");
    }
    hp_.rope_type = hp_.arch == "llama" ? 0 : GGML_ROPE_TYPE_NEOX;
    hp_.rope_n_ctx_orig = hp_.n_ctx_train;
    const std::string scaling = f.get_string(a + "rope.scaling.type", "none");
    const double factor = f.get_float(a + "rope.scaling.factor", 1.0);
    if (scaling != "none" && !(factor > 0.0 && std::isfinite(factor))) {
        throw Error("'" + f.path() + "': rope.scaling.factor must be a positive number");
    }
    if (scaling == "linear") {
        hp_.rope_freq_scale = static_cast<float>(1.0 / factor);
    } else if (scaling == "yarn") {
        hp_.rope_freq_scale = static_cast<float>(1.0 / factor);
        hp_.rope_n_ctx_orig = checked_positive(f, a + "rope.scaling.original_context_length",
                                               f.get_int(a + "rope.scaling.original_context_length", hp_.n_ctx_train),
                                               1 << 24);
        hp_.yarn_ext_factor = 1.0f;
        hp_.yarn_attn_factor = static_cast<float>(f.get_float(a + "rope.scaling.attn_factor", 1.0));
        if (!(hp_.yarn_attn_factor > 0.0f) || !std::isfinite(hp_.yarn_attn_factor)) {
            throw Error("'" + f.path() + "': rope.scaling.attn_factor must be a positive number");
        }
    } else if (scaling != "none") {
        throw Error("'" + f.path() + "': unsupported rope scaling '" + scaling + "'");
    }
}

ggml_tensor *Model::optional(const std::string &name, std::initializer_list<int64_t> shape) {
    const GgufFile::TensorInfo *info = file_->find_tensor(name);
    if (!info) {
        return nullptr;
    }
    int64_t want[4] = {1, 1, 1, 1};
    int n = 0;
    for (int64_t d : shape) {
        want[n++] = d;
    }
    for (int i = 0; i < 4; ++i) {
        if (info->ne[i] != want[i]) {
            throw Error("'" + file_->path() + "': tensor '" + name + "' has shape " + shape_string(info->ne, 4) +
                        ", expected " + shape_string(want, 4) + " from the hyper-parameters");
        }
    }
    // Vectors (norm weights, biases, rope factors) are added or multiplied elementwise, which the CPU backend
    // does in f32 only; matrices go through matrix multiplication or row lookup.
    const bool vector = shape.size() == 1;
    if (vector ? info->type != GGML_TYPE_F32 : !matrix_type(info->type)) {
        throw Error("'" + file_->path() + "': tensor '" + name + "' has type " + ggml_type_name(info->type) +
                    (vector ? ", expected f32" : ", which is not a supported weight type"));
    }
    return ggml_get_tensor(file_->tensor_meta(), name.c_str());
}

ggml_tensor *Model::require(const std::string &name, std::initializer_list<int64_t> shape) {
    ggml_tensor *t = optional(name, shape);
    if (!t) {
        throw Error("'" + file_->path() + "': required tensor '" + name + "' is missing");
    }
    return t;
}

void Model::bind_tensors() {
    const int64_t d = hp_.n_embd, dq = hp_.n_embd_q(), dkv = hp_.n_embd_kv(), ff = hp_.n_ff, v = hp_.n_vocab;
    tok_embd = require("token_embd.weight", {d, v});
    output_norm = require("output_norm.weight", {d});
    output = optional("output.weight", {d, v});
    if (!output) {
        output = tok_embd;  // tied embeddings
    }
    rope_freqs = optional("rope_freqs.weight", {hp_.rope_n_dims / 2});
    layers.resize(hp_.n_layer);
    for (int il = 0; il < hp_.n_layer; ++il) {
        const std::string p = "blk." + std::to_string(il) + ".";
        LayerWeights &l = layers[il];
        l.attn_norm = require(p + "attn_norm.weight", {d});
        l.wq = require(p + "attn_q.weight", {d, dq});
        l.wk = require(p + "attn_k.weight", {d, dkv});
        l.wv = require(p + "attn_v.weight", {d, dkv});
        l.wo = require(p + "attn_output.weight", {dq, d});
        l.bq = optional(p + "attn_q.bias", {dq});
        l.bk = optional(p + "attn_k.bias", {dkv});
        l.bv = optional(p + "attn_v.bias", {dkv});
        l.bo = optional(p + "attn_output.bias", {d});
        l.q_norm = optional(p + "attn_q_norm.weight", {hp_.head_dim});
        l.k_norm = optional(p + "attn_k_norm.weight", {hp_.head_dim});
        l.ffn_norm = require(p + "ffn_norm.weight", {d});
        l.ffn_gate = require(p + "ffn_gate.weight", {d, ff});
        l.ffn_up = require(p + "ffn_up.weight", {d, ff});
        l.ffn_down = require(p + "ffn_down.weight", {ff, d});
        if (hp_.arch == "qwen3" && (!l.q_norm || !l.k_norm)) {
            throw Error("'" + file_->path() + "': qwen3 layer " + std::to_string(il) + " lacks attn_q_norm/attn_k_norm");
        }
    }
}

std::vector<float> Model::dequantize(const std::string &name, std::vector<int64_t> *shape) const {
    const ggml_tensor *t = ggml_get_tensor(file_->tensor_meta(), name.c_str());
    if (!t) {
        throw Error("no tensor named '" + name + "' in '" + file_->path() + "'");
    }
    const int64_t n_per_row = t->ne[0];
    const int64_t n_rows = n_per_row > 0 ? ggml_nelements(t) / n_per_row : 0;  // a file may hold empty tensors
    std::vector<float> out(static_cast<size_t>(ggml_nelements(t)));
    const ggml_type_traits *traits = ggml_get_type_traits(t->type);
    for (int64_t r = 0; r < n_rows; ++r) {
        const char *src = static_cast<const char *>(file_data(t)) + r * t->nb[1];
        float *dst = out.data() + r * n_per_row;
        if (t->type == GGML_TYPE_F32) {
            std::memcpy(dst, src, n_per_row * sizeof(float));
        } else if (traits->to_float) {
            traits->to_float(src, dst, n_per_row);
        } else {
            throw Error("tensor '" + name + "' has a type that cannot be dequantized");
        }
    }
    if (shape) {
        shape->clear();
        for (int i = 0; i < ggml_n_dims(t); ++i) {
            shape->push_back(t->ne[i]);
        }
    }
    return out;
}

}  // namespace adadecode
