// Per-layer KV cache. Every layer keeps its own fill level because the layer-parallel scheduler leaves the upper
// layers of deferred rows unwritten for a while; rollback after a failed verification just lowers the levels.
#pragma once

#include <algorithm>
#include <vector>

#include "ggml-backend.h"
#include "ggml-cpp.h"
#include "model.h"

namespace adadecode {

class KvCache {
public:
    // The allocated length is n_ctx rounded up to kv_block so that attention always runs over a multiple of
    // kv_block positions: then a row's attention arithmetic does not depend on how many rows share its pass.
    static constexpr int kv_block = 256;

    // In the model's buffer type; f16, or f32 when the model is on a device, whose one-query-column kernels exist
    // for f32 K/V at any length.
    KvCache(const Model &model, int n_ctx);
    KvCache(const KvCache &) = delete;
    KvCache &operator=(const KvCache &) = delete;

    int n_ctx() const { return n_ctx_; }
    int n_alloc() const { return n_alloc_; }
    // K: [n_embd_kv, n_alloc], one row per position. V: [n_alloc, n_embd_kv], transposed so that the
    // attention-weighted sum is a plain matrix product.
    ggml_tensor *k(int layer) const { return k_[layer]; }
    ggml_tensor *v(int layer) const { return v_[layer]; }

    int filled(int layer) const { return filled_[layer]; }
    // Positions filled in every layer: the ones a later generation can reuse.
    int valid() const { return filled_.empty() ? 0 : *std::min_element(filled_.begin(), filled_.end()); }
    void mark_filled(int layer_begin, int layer_end, int pos_end);
    void truncate(int n_positions);  // forget every position >= n_positions in every layer
    void clear() { truncate(0); }

private:
    int n_ctx_;
    int n_alloc_;
    ggml_context_ptr ctx_;
    std::vector<ggml_backend_buffer_ptr> buffers_;
    std::vector<ggml_tensor *> k_, v_;
    std::vector<int> filled_;
};

}  // namespace adadecode
