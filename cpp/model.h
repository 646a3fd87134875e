// GGUF model loader: hyper-parameters and weights of llama / qwen2 / qwen3 models, mmapped, every shape checked.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "ggml-backend.h"
#include "ggml-cpp.h"
#include "ggml.h"
#include "gguf_file.h"

namespace adadecode {

struct HParams {
    std::string arch;
    int n_layer = 0;
    int n_embd = 0;
    int n_ff = 0;
    int n_head = 0;
    int n_head_kv = 0;
    int head_dim = 0;
    int n_vocab = 0;
    int n_ctx_train = 0;
    float rms_eps = 1e-6f;
    float rope_theta = 10000.0f;
    float rope_freq_scale = 1.0f;  // 1 / linear scaling factor
    int rope_type = 0;             // GGML_ROPE_TYPE_NORM for llama, _NEOX for qwen2/qwen3
    int rope_n_dims = 0;
    int rope_n_ctx_orig = 0;
    float yarn_ext_factor = 0.0f;  // > 0 only with yarn scaling
    float yarn_attn_factor = 1.0f;
    float yarn_beta_fast = 32.0f;
    float yarn_beta_slow = 1.0f;

    int n_embd_q() const { return n_head * head_dim; }
    int n_embd_kv() const { return n_head_kv * head_dim; }
};

struct LayerWeights {
    ggml_tensor *attn_norm = nullptr;
    ggml_tensor *wq = nullptr, *wk = nullptr, *wv = nullptr, *wo = nullptr;
    ggml_tensor *bq = nullptr, *bk = nullptr, *bv = nullptr, *bo = nullptr;
    ggml_tensor *q_norm = nullptr, *k_norm = nullptr;
    ggml_tensor *ffn_norm = nullptr;
    ggml_tensor *ffn_gate = nullptr, *ffn_up = nullptr, *ffn_down = nullptr;
};

// One device's share of a model split across devices: layers [layer_begin, layer_end) with their KV cache.
struct LayerRange {
    ggml_backend_dev_t device = nullptr;
    int layer_begin = 0;
    int layer_end = 0;
};

class Model {
public:
    // Loads `path`; weights stay in the page cache through mmap. With `repack`, the matmul weights that one of
    // ggml's CPU extra buffer types supports are copied into it instead (re-laid out for multi-row kernels).
    // With a `device`, every weight is copied into that device's memory instead (the file stays mapped for
    // host-side reads: embedding rows, head rows, dequantize). With `pack` (and neither of the others), the weights
    // that our matmul kernel multiplies faster in a layout of its own (qmatmul_packs) are copied into it.
    // Throws Error naming the problem.
    explicit Model(const std::string &path, bool repack = false, ggml_backend_dev_t device = nullptr, bool pack = true);
    // A model split across `devices` in whole layers, in proportion to `proportions` (split_layers in
    // layer_split.h): each range's layers go to its device, the token embeddings to the first range's and the
    // output norm and matrix (which exit heads use too) to the last range's.
    Model(const std::string &path, const std::vector<ggml_backend_dev_t> &devices,
          const std::vector<float> &proportions);
    Model(const Model &) = delete;
    Model &operator=(const Model &) = delete;

    const HParams &hparams() const { return hp_; }
    const GgufFile &file() const { return *file_; }
    ggml_backend_buffer_type_t buffer_type() const;
    // The device the weights were copied to, or nullptr when the CPU computes from the mapping.
    // For a split model, the device of the last range (the output's, where exit heads live too).
    ggml_backend_dev_t device() const { return device_; }
    // The ranges of a split model; empty for a model on one device.
    const std::vector<LayerRange> &split() const { return split_; }
    // Where layer il's weights and KV cache live.
    ggml_backend_buffer_type_t layer_buffer_type(int il) const;

    ggml_tensor *tok_embd = nullptr;
    ggml_tensor *output_norm = nullptr;
    ggml_tensor *output = nullptr;  // == tok_embd when the embeddings are tied
    ggml_tensor *rope_freqs = nullptr;
    std::vector<LayerWeights> layers;

    // The bytes of a weight as stored in the file (a repacked tensor's own data has another layout).
    const void *file_data(const ggml_tensor *t) const;
    // How many weights and bytes live in an extra (repacked) buffer.
    int n_repacked() const { return n_repacked_; }
    size_t repacked_bytes() const;
    // w in our matmul kernel's own layout (a 1-d int8 tensor), or nullptr when it was not packed.
    ggml_tensor *packed(const ggml_tensor *w) const;
    size_t packed_bytes() const { return packed_buffer_ ? ggml_backend_buffer_get_size(packed_buffer_.get()) : 0; }
    // The weight matrices a pass over every layer multiplies, output matrix included (what one row reads).
    std::vector<const ggml_tensor *> pass_weights() const;
    // Their bytes in the file's layout: what one row of such a pass reads, the unit check and pass costs are priced in.
    size_t pass_bytes() const;

    // The token embeddings of `ids` as float32 rows (n x n_embd), read from the file on the host.
    void embed(const int32_t *ids, int n, float *dst) const;
    // The named weight dequantized to float32, row-major with ne[0] fastest (for the exit-head trainer).
    std::vector<float> dequantize(const std::string &name, std::vector<int64_t> *shape) const;

private:
    void read_hparams();
    void map_weights();
    void bind_tensors();
    void place_weights(bool repack);
    void copy_weights_to_device();
    void copy_weights_to_split();
    void check_fits(ggml_backend_dev_t device, size_t needed, const std::string &what) const;
    void pack_weights();
    void release_file_pages(const ggml_tensor *t);
    std::vector<ggml_tensor *> matmul_weights() const;
    ggml_tensor *require(const std::string &name, std::initializer_list<int64_t> shape);
    ggml_tensor *optional(const std::string &name, std::initializer_list<int64_t> shape);

    std::unique_ptr<GgufFile> file_;
    HParams hp_;
    // The model file mapped read-only, unmapped with the model (after every buffer that points into it).
    struct Mapping {
        void *data = nullptr;
        size_t size = 0;
        Mapping() = default;
        Mapping(const Mapping &) = delete;
        Mapping &operator=(const Mapping &) = delete;
        ~Mapping();
    };
    Mapping mapping_;
    ggml_backend_dev_t device_ = nullptr;
    std::vector<LayerRange> split_;
    ggml_backend_buffer_ptr weights_buffer_;
    std::vector<ggml_backend_buffer_ptr> split_buffers_;  // one per range of a split model
    std::vector<ggml_backend_buffer_ptr> extra_buffers_;
    int n_repacked_ = 0;
    ggml_context_ptr packed_ctx_;
    ggml_backend_buffer_ptr packed_buffer_;
    std::unordered_map<const ggml_tensor *, ggml_tensor *> packed_;
};

}  // namespace adadecode
