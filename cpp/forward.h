// Forward passes over a range of layers for a contiguous run of positions, on one ggml backend. This is the one
// building block of both decoders: standard decoding runs [0, L) on one row; the layer-parallel scheduler runs
// the segments between exit layers on the deferred rows plus the current token in one batched pass.
#pragma once

#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpp.h"
#include "ggml-cpu.h"
#include "kv_cache.h"
#include "model.h"
#include "ops/qmatmul.h"
#include "pass_runner.h"
#include "thread_governor.h"

namespace adadecode {

class Forward : public PassRunner {
public:
    // own_matmul: multiply quantized weights with our batch-invariant small-batch kernel (ggml/ops/qmatmul.h) where
    // it supports the type, instead of ggml's mul_mat. Off only to measure ggml's kernels side by side. A model on
    // a device runs on that device's backend with ggml's kernels.
    // `device`: the device to run on when it is not the model's (one range of a split model, see SplitRunner).
    Forward(const Model &model, KvCache &cache, int n_threads, bool own_matmul = true,
            ggml_backend_dev_t device = nullptr);
    Forward(const Forward &) = delete;
    Forward &operator=(const Forward &) = delete;

    ModelDims dims() const override;
    int n_ctx() const override { return cache_.n_ctx(); }
    void run(const PassRequest &req, PassResult *out) override;
    void truncate(int n_positions) override { cache_.truncate(n_positions); }
    // Appends every pass run from now on to `trace` (nullptr: stop); tracing only observes, it changes no pass.
    void set_trace(std::vector<PassTrace> *trace) { trace_ = trace; }
    int n_threads() const { return n_threads_; }
    // Runs the following passes on `n` of the n_threads() threads (1 <= n <= n_threads(); the same outputs, bitwise).
    // A count first used starts its own thread pool; the pool of the count left behind sleeps.
    void use_threads(int n);
    // The threads the last pass ran on.
    int threads_in_use() const { return threads_in_use_; }
    // From now on each pass runs on as many threads as other programs leave cores free for (LoadAwareThreads), at
    // most n_threads(). A pass on a device has no threads to adapt: no effect there.
    void adapt_threads_to_load();
    // Whether the threads of a matmul take over tiles a slower thread has not reached (TileShare, on by default
    // unless ADADECODE_QMATMUL_SHARE=0): the same bits either way; off only to measure the difference.
    void set_tile_sharing(bool on) { share_tiles_ = on; }
    ggml_backend_t backend() const { return backend_.get(); }
    // Lets the CPU worker threads sleep now instead of spinning a while for the next graph (the next pass wakes
    // them): for measuring several Forwards in one process, whose spinning workers would share the cores.
    void pause_threads() const {
        if (!threadpools_.empty())
            ggml_threadpool_pause(threadpools_[threads_in_use_ - 1].get());
    }

private:
    void run_pass(const PassRequest &req, PassResult *out);
    ggml_tensor *build_layer(ggml_context *ctx, ggml_cgraph *gf, int il, ggml_tensor *x, ggml_tensor *positions,
                             ggml_tensor *mask, int pos0, int n_rows, int n_kv);
    ggml_tensor *build_norm_output(ggml_context *ctx, ggml_tensor *x, ggml_tensor *out_matrix,
                                   ggml_tensor *packed = nullptr);
    // The state an exit head's norm and output rows read: its transform of `h`, dense or two-layer.
    ggml_tensor *build_head_state(ggml_context *ctx, const HeadWeights &head, ggml_tensor *h) const;
    ggml_tensor *attention(ggml_context *ctx, int il, ggml_tensor *q, ggml_tensor *mask, int n_kv) const;
    // Whether w goes through our kernel (ggml/ops/qmatmul.h) rather than ggml's mul_mat.
    bool ours(const ggml_tensor *w) const;
    // `packed`: w in our kernel's layout where the model did not pack w itself (the exit heads' matrices).
    ggml_tensor *matmul(ggml_context *ctx, ggml_tensor *w, ggml_tensor *x, ggml_tensor *packed = nullptr) const;
    // The products of several weights with the same x, each [n_out, n_rows]: where our kernel takes every weight,
    // views of one fused op (qmatmul_fused: x quantized once), else one matmul each.
    std::vector<ggml_tensor *> matmuls(ggml_context *ctx, const std::vector<ggml_tensor *> &weights,
                                       ggml_tensor *x) const;
    struct GraphSlot {
        std::vector<uint8_t> memory;  // the ggml context of the graph
        size_t n_nodes = 0;
        ggml_gallocr_ptr allocator;
        std::string structure;  // of the graph the allocator last planned for
    };
    static std::string structure_of(const PassRequest &req);  // equal for passes that build the same graph
    GraphSlot &slot_for(const PassRequest &req, const std::string &structure);  // after device_decode_ is set

    const Model &model_;
    KvCache &cache_;
    ggml_backend_dev_t device_;  // nullptr: the CPU computing from the mapped file
    int n_threads_;
    bool own_matmul_;
    bool share_tiles_ = qmatmul_tile_sharing_default();
    // One per matmul op of the graph being built, reused by the next graph (see TileShare).
    mutable std::deque<TileShare> tile_shares_;
    mutable size_t tile_shares_used_ = 0;
    TileShare *next_tile_share() const;
    // A decode pass on a device: ggml's device kernels are chosen by row count, so such a pass is built from pieces
    // whose kernels a one-row pass also uses (see Forward::run). Set per pass, with the pass's KV index inputs.
    bool device_decode_ = false;
    // Rows of a device decode pass that share one attention product (see Forward::attention): 1 where the device's
    // kernels give no such guarantee.
    int64_t attention_group_ = 1;
    // A device decode pass's rows in attention groups: consecutive rows attending over the same number of cache
    // positions (kv_positions of the row's own position), at most attention_group_ rows as columns of a product.
    struct AttentionGroup {
        int64_t first_row;
        int64_t rows;
        int n_kv;
        size_t mask_offset;  // elements into the mask input, which holds each group's [n_kv, rows] in turn
    };
    std::vector<AttentionGroup> attention_groups_;
    ggml_tensor *kv_rows_in_ = nullptr;
    ggml_tensor *v_index_in_ = nullptr;
    struct ThreadpoolDeleter {
        void operator()(ggml_threadpool_t pool) const { ggml_threadpool_free(pool); }
    };
    // [n - 1]: the pool of n threads, made when a pass first runs on n; they outlive the backend that uses them.
    std::vector<std::unique_ptr<ggml_threadpool, ThreadpoolDeleter>> threadpools_;
    int threads_in_use_;
    std::unique_ptr<LoadAwareThreads> load_aware_;  // null: every pass runs on threads_in_use_
    ggml_backend_ptr backend_;
    std::map<std::string, GraphSlot> slots_;
    std::vector<float> mask_;
    std::vector<int32_t> positions_;
    std::vector<float> embeddings_;
    std::vector<int64_t> kv_index_;
    std::vector<PassTrace> *trace_ = nullptr;
};

}  // namespace adadecode
