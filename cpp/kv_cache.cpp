#include "kv_cache.h"

#include <unistd.h>

#include <algorithm>
#include <cstdint>

#include "buffer_placement.h"
#include "error.h"
#include "ggml-alloc.h"

namespace adadecode {

KvCache::KvCache(const Model &model, int n_ctx) : n_ctx_(n_ctx) {
    const HParams &hp = model.hparams();
    const ggml_type type = model.device() ? GGML_TYPE_F32 : GGML_TYPE_F16;
    if (n_ctx <= 0) {
        throw Error("context size must be positive, got " + std::to_string(n_ctx));
    }
    // Refuse a cache the machine cannot hold: with overcommit the allocation itself would succeed and the clearing
    // below would then be killed by the OOM killer instead of failing with a message.
    const uint64_t positions = (static_cast<uint64_t>(n_ctx) + kv_block - 1) / kv_block * kv_block;
    const uint64_t bytes = 2 * ggml_type_size(type) * positions * static_cast<uint64_t>(hp.n_embd_kv()) * hp.n_layer;
    const uint64_t memory = static_cast<uint64_t>(sysconf(_SC_PHYS_PAGES)) * static_cast<uint64_t>(sysconf(_SC_PAGESIZE));
    if (positions > static_cast<uint64_t>(INT32_MAX) || bytes > memory) {
        throw Error("a KV cache for " + std::to_string(n_ctx) + " positions needs " + std::to_string(bytes >> 20) +
                    " MiB, more than this machine's " + std::to_string(memory >> 20) + " MiB of memory (lower n_ctx)");
    }
    n_alloc_ = static_cast<int>(positions);
    ggml_init_params params{};
    params.mem_size = ggml_tensor_overhead() * (2 * hp.n_layer + 1);
    params.no_alloc = true;
    ctx_.reset(ggml_init(params));
    for (int il = 0; il < hp.n_layer; ++il) {
        k_.push_back(ggml_new_tensor_2d(ctx_.get(), type, hp.n_embd_kv(), n_alloc_));
        v_.push_back(ggml_new_tensor_2d(ctx_.get(), type, n_alloc_, hp.n_embd_kv()));
        ggml_format_name(k_.back(), "cache_k.%d", il);  // named in placement errors
        ggml_format_name(v_.back(), "cache_v.%d", il);
    }
    if (model.split().size() <= 1) {
        buffers_.emplace_back(ggml_backend_alloc_ctx_tensors_from_buft(ctx_.get(), model.buffer_type()));
        if (!buffers_.back()) {
            throw Error("cannot allocate the KV cache for " + std::to_string(n_ctx) + " positions");
        }
        // Masked positions get weight exactly 0; zeroed memory keeps 0 * V free of NaN from uninitialised bytes.
        ggml_backend_buffer_clear(buffers_.back().get(), 0);
    }
    // A split model keeps each layer's cache on the device that computes the layer: one buffer per device.
    for (int begin = 0; model.split().size() > 1 && begin < hp.n_layer;) {
        ggml_backend_buffer_type_t buft = model.layer_buffer_type(begin);
        int end = begin + 1;
        while (end < hp.n_layer && model.layer_buffer_type(end) == buft) ++end;
        std::vector<ggml_tensor *> tensors;
        for (int il = begin; il < end; ++il) tensors.insert(tensors.end(), {k_[il], v_[il]});
        buffers_.push_back(place_tensors(buft, tensors));
        if (!buffers_.back()) {
            throw Error("cannot allocate the KV cache for " + std::to_string(n_ctx) + " positions (" +
                        std::to_string(placement_bytes(buft, tensors) >> 20) + " MiB in " +
                        ggml_backend_buft_name(buft) + ")");
        }
        ggml_backend_buffer_clear(buffers_.back().get(), 0);  // as above
        begin = end;
    }
    filled_.assign(hp.n_layer, 0);
}

void KvCache::mark_filled(int layer_begin, int layer_end, int pos_end) {
    for (int il = layer_begin; il < layer_end; ++il) {
        filled_[il] = std::max(filled_[il], pos_end);
    }
}

void KvCache::truncate(int n_positions) {
    for (int &f : filled_) {
        f = std::min(f, n_positions);
    }
}

}  // namespace adadecode
