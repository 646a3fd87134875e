#include "heads.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <unordered_map>

#include "ops/qmatmul.h"

namespace adadecode {

namespace {

constexpr int64_t heads_format_version = 2;

void read_exact(const std::string &path, size_t offset, void *dst, size_t n) {
    FILE *f = fopen(path.c_str(), "rb");
    if (!f) throw Error("cannot open '" + path + "'");
    const bool ok = fseek(f, static_cast<long>(offset), SEEK_SET) == 0 && fread(dst, 1, n, f) == n;
    fclose(f);
    if (!ok) throw Error("'" + path + "' is truncated");
}

// An f16 or f32 transform's values (checked finite on load: a NaN in a head would make every confidence NaN, and the
// head would silently never exit early).
std::vector<float> to_f32(const std::vector<uint8_t> &bytes, ggml_type type) {
    std::vector<float> values(bytes.size() / ggml_type_size(type));
    if (type == GGML_TYPE_F16) {
        ggml_fp16_to_fp32_row(reinterpret_cast<const ggml_fp16_t *>(bytes.data()), values.data(),
                              static_cast<int64_t>(values.size()));
    } else {
        std::memcpy(values.data(), bytes.data(), values.size() * sizeof(float));
    }
    return values;
}

}  // namespace

ExitHeads::ExitHeads(const std::string &path, const Model &model) : path_(path) { load(model); }

void ExitHeads::load(const Model &model) {
    const std::string &path = path_;
    GgufFile file(path);
    const HParams &hp = model.hparams();
    const std::string what = "heads file '" + path + "'";
    if (file.get_string("general.type", "") != "adapter" || file.get_string("adapter.type", "") != "exit_heads") {
        throw Error(what + " is not an exit-heads adapter (general.type/adapter.type)");
    }
    const std::string arch = file.get_string("general.architecture", "");
    const int64_t depth = file.get_int("exit_heads.block_count", -1);
    const int64_t width = file.get_int("exit_heads.embedding_length", -1);
    const int64_t vocab = file.get_int("exit_heads.vocab_size", hp.n_vocab);
    if (arch != hp.arch || depth != hp.n_layer || width != hp.n_embd || vocab != hp.n_vocab) {
        throw Error(what + " was made for another model (" + arch + ", " + std::to_string(depth) + " layers, width " +
                    std::to_string(width) + ", vocabulary " + std::to_string(vocab) + "); this model is " + hp.arch +
                    ", " + std::to_string(hp.n_layer) + " layers, width " + std::to_string(hp.n_embd) +
                    ", vocabulary " + std::to_string(hp.n_vocab));
    }
    for (int64_t l : file.get_int_array("exit_heads.layers")) {
        if (l < 1 || l >= hp.n_layer) {
            throw Error(what + ": exit layer " + std::to_string(l) + " is outside 1.." + std::to_string(hp.n_layer - 1));
        }
        if (!layers_.empty() && l <= layers_.back()) {
            throw Error(what + ": exit layers must be strictly increasing");
        }
        layers_.push_back(static_cast<int>(l));
    }
    if (layers_.empty()) throw Error(what + " lists no exit layers");

    const GgufFile::TensorInfo *vocab_info = file.find_tensor("exit.vocab");
    if (vocab_info) {
        if (vocab_info->type != GGML_TYPE_I32 || vocab_info->ne[1] != 1 || vocab_info->ne[2] != 1 ||
            vocab_info->ne[3] != 1 || vocab_info->ne[0] < 1 ||
            vocab_info->ne[0] > hp.n_vocab) {
            throw Error(what + ": tensor 'exit.vocab' must be a 1-D int32 list of at most n_vocab token ids");
        }
        vocab_.resize(vocab_info->ne[0]);
        read_exact(path, vocab_info->offset, vocab_.data(), vocab_.size() * sizeof(int32_t));
        for (int32_t id : vocab_) {
            if (id < 0 || id >= hp.n_vocab) throw Error(what + ": exit.vocab holds invalid token id " + std::to_string(id));
        }
    }
    head_vocab_ = vocab_.empty() ? hp.n_vocab : static_cast<int>(vocab_.size());

    // Format 1 holds dense transforms only; format 2 tags each layer with its design (docs/heads_format.md).
    const int64_t version = file.get_int("exit_heads.version", 1);
    if (version < 1 || version > heads_format_version) {
        throw Error(what + " has heads format version " + std::to_string(version) + "; this engine reads versions 1.." +
                    std::to_string(heads_format_version) + " (a newer adadecode wrote it?)");
    }
    std::vector<std::string> designs(layers_.size(), "dense");
    if (version >= 2) {
        if (file.get_array_size("exit_heads.designs") != layers_.size()) {
            throw Error(what + ": format version 2 needs 'exit_heads.designs', one design tag per exit layer (" +
                        std::to_string(layers_.size()) + "), but it holds " +
                        std::to_string(file.get_array_size("exit_heads.designs")));
        }
        designs = file.get_string_array("exit_heads.designs");
    } else if (file.get_array_size("exit_heads.designs") != 0) {
        throw Error(what + ": 'exit_heads.designs' needs 'exit_heads.version' 2");
    }

    ggml_init_params params{};
    params.mem_size = ggml_tensor_overhead() * (2 * layers_.size() + 3);
    params.no_alloc = true;
    ctx_.reset(ggml_init(params));
    // On the CPU the transforms are stored as Q8_0 for our own kernel, half the bytes of ggml's F16 product (Qwen 1.5B
    // with all three exit layers checking every token: 0.87 -> 0.89x standard decoding's speed). Heads only propose
    // tokens, which verification checks, so their rounding cannot change the output.
    ggml_tensor *probe = ggml_new_tensor_2d(ctx_.get(), GGML_TYPE_Q8_0, hp.n_embd, hp.n_embd);
    const bool to_q8_0 = !model.device() && hp.n_embd % ggml_blck_size(GGML_TYPE_Q8_0) == 0 && qmatmul_supports(probe);
    // (tensor, its file entry, convert to Q8_0) for every head matrix; heads_ gets one entry per layer.
    struct Matrix {
        ggml_tensor *tensor;
        const GgufFile::TensorInfo *info;
        bool q8_0;
    };
    std::vector<Matrix> matrices;
    auto matrix = [&](const std::string &name, int64_t rows, int64_t cols, bool q8_0) {
        const GgufFile::TensorInfo *info = file.find_tensor(name);
        if (!info) throw Error(what + ": tensor '" + name + "' is missing");
        // ggml's order: ne[0] is the input width (columns), ne[1] the outputs (rows).
        if (info->ne[0] != cols || (rows > 0 && info->ne[1] != rows) || info->ne[1] < 1 || info->ne[2] != 1 ||
            info->ne[3] != 1) {
            throw Error(what + ": tensor '" + name + "' must be " + (rows > 0 ? std::to_string(rows) : "R") + " x " +
                        std::to_string(cols) + " (rows x columns), not " + std::to_string(info->ne[1]) + " x " +
                        std::to_string(info->ne[0]));
        }
        if (info->type != GGML_TYPE_F32 && info->type != GGML_TYPE_F16) {
            throw Error(what + ": tensor '" + name + "' must be f32 or f16");
        }
        ggml_tensor *t = ggml_new_tensor_2d(ctx_.get(), q8_0 ? GGML_TYPE_Q8_0 : info->type, info->ne[0], info->ne[1]);
        matrices.push_back({t, info, q8_0});
        return t;
    };
    for (size_t i = 0; i < layers_.size(); ++i) {
        const std::string base = "exit." + std::to_string(layers_[i]) + ".";
        HeadWeights head;
        if (designs[i] == "dense") {
            head.transform = matrix(base + "weight", hp.n_embd, hp.n_embd, to_q8_0);
        } else if (designs[i] == "mlp") {
            if (file.find_tensor(base + "weight")) {
                throw Error(what + ": exit layer " + std::to_string(layers_[i]) + " is tagged 'mlp' but also holds "
                            "a dense transform '" + base + "weight'");
            }
            head.w1 = matrix(base + "w1", 0, hp.n_embd, false);
            head.w2 = matrix(base + "w2", hp.n_embd, head.w1->ne[1], false);
        } else {
            throw Error(what + ": exit layer " + std::to_string(layers_[i]) + " has head design '" + designs[i] +
                        "', which this engine does not know (it runs 'dense' and 'mlp')");
        }
        heads_.push_back(head);
    }
    ggml_tensor *subset = nullptr;
    if (!vocab_.empty()) {
        subset = ggml_new_tensor_2d(ctx_.get(), model.output->type, hp.n_embd, head_vocab_);
    }
    buffer_.reset(ggml_backend_alloc_ctx_tensors_from_buft(ctx_.get(), model.buffer_type()));
    if (!buffer_) throw Error("cannot allocate memory for the exit heads");
    // Where the model multiplies its weights from our packed layout, the heads' matrices get it too: the subset of a
    // Q6_K output matrix took 0.22 ms for one row from the file layout and 0.17 ms packed (kernelbench, 8192 rows).
    std::unordered_map<const ggml_tensor *, ggml_tensor *> packed;
    if (model.packed_bytes() > 0) {
        std::vector<ggml_tensor *> to_pack;
        for (const Matrix &m : matrices) {
            if (m.q8_0 && qmatmul_packs(m.tensor))
                to_pack.push_back(m.tensor);
        }
        if (subset && qmatmul_packs(subset))
            to_pack.push_back(subset);
        if (!to_pack.empty()) {
            ggml_init_params packed_params{ggml_tensor_overhead() * to_pack.size(), nullptr, true};
            packed_ctx_.reset(ggml_init(packed_params));
            for (ggml_tensor *t : to_pack) {
                packed[t] =
                    ggml_new_tensor_1d(packed_ctx_.get(), GGML_TYPE_I8, static_cast<int64_t>(qmatmul_packed_size(t)));
            }
            packed_buffer_.reset(
                ggml_backend_alloc_ctx_tensors_from_buft(packed_ctx_.get(), ggml_backend_cpu_buffer_type()));
            if (!packed_buffer_)
                throw Error("cannot allocate memory for the exit heads' packed matrices");
        }
    }
    auto store = [&](ggml_tensor *t, const std::vector<uint8_t> &file_layout) {
        ggml_backend_tensor_set(t, file_layout.data(), 0, file_layout.size());
        auto found = packed.find(t);
        if (found != packed.end())
            qmatmul_pack(t, file_layout.data(), found->second->data);
    };
    std::vector<uint8_t> bytes;
    for (const Matrix &m : matrices) {
        bytes.resize(m.info->nbytes);
        read_exact(path, m.info->offset, bytes.data(), bytes.size());
        std::vector<float> values = to_f32(bytes, m.info->type);
        if (!std::all_of(values.begin(), values.end(), [](float v) { return std::isfinite(v); })) {
            throw Error(what + ": tensor '" + m.info->name + "' holds NaN or infinite values");
        }
        if (m.q8_0) {
            bytes.resize(ggml_nbytes(m.tensor));
            ggml_quantize_chunk(GGML_TYPE_Q8_0, values.data(), bytes.data(), 0, m.tensor->ne[1], m.tensor->ne[0],
                                nullptr);
        }
        store(m.tensor, bytes);
    }
    if (subset) {
        // Quantized rows are self-contained blocks, so a row subset of the output matrix is a byte copy.
        const size_t row_bytes = model.output->nb[1];
        const char *rows = static_cast<const char *>(model.file_data(model.output));  // the file layout
        bytes.resize(row_bytes * vocab_.size());
        for (size_t i = 0; i < vocab_.size(); ++i) {
            std::memcpy(bytes.data() + i * row_bytes, rows + vocab_[i] * row_bytes, row_bytes);
        }
        store(subset, bytes);
    }
    // A check reads the head's transform and output rows: its cost next to a one-row pass is about their bytes next
    // to the model's (decoding streams the weights).
    const size_t model_bytes = model.pass_bytes();
    auto packed_of = [&](const ggml_tensor *t) { return packed.count(t) ? packed.at(t) : nullptr; };
    for (HeadWeights &head : heads_) {
        head.output_rows = subset ? subset : model.output;
        head.packed_transform = packed_of(head.transform);
        head.packed_output_rows = packed_of(head.output_rows);
        size_t bytes_read = ggml_nbytes(head.output_rows);
        for (const ggml_tensor *t : {head.transform, head.w1, head.w2}) bytes_read += t ? ggml_nbytes(t) : 0;
        check_cost_.push_back(static_cast<double>(bytes_read) / static_cast<double>(model_bytes));
    }
}

}  // namespace adadecode
