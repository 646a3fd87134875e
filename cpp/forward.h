// Forward passes over a range of layers for a contiguous run of positions, on one ggml backend. This is the one
// building block of both decoders: standard decoding runs [0, L) on one row; the layer-parallel scheduler runs
// the segments between exit layers on the deferred rows plus the current token in one batched pass.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "ggml-alloc.h"
#include "ggml-backend.h"
#include "ggml-cpu.h"
#include "kv_cache.h"
#include "model.h"

namespace adadecode {

// An exit head at one layer: logits = output_rows · norm(transform · h).
struct HeadWeights {
    ggml_tensor *transform = nullptr;    // [n_embd, n_embd]
    ggml_tensor *output_rows = nullptr;  // [n_embd, n_head_vocab]: the model's output matrix or a subset of its rows
};

struct PassRequest {
    int layer_begin = 0;
    int layer_end = 0;
    int pos0 = 0;   // position of the first row; rows are pos0, pos0 + 1, ...
    int n_rows = 0;
    const int32_t *tokens = nullptr;  // n_rows token ids, when layer_begin == 0
    const float *hidden = nullptr;    // n_rows x n_embd residual-stream states after layer_begin, otherwise
    bool want_hidden = false;         // return the states after layer_end
    std::vector<int> capture_layers;  // also return the states after these layers (1..n_layer)
    enum class Logits { none, last, all } logits = Logits::none;  // needs layer_end == n_layer
    const HeadWeights *head = nullptr;                              // exit head on the last row after layer_end
    // Prompt passes (prefill, teacher forcing) only have to agree with each other, not bitwise with the decode
    // passes, so a device may batch them with its fastest kernels.
    bool prompt = false;
};

// One pass as Forward::run saw it, for pricing decoding runs with another machine's pass costs (bench/replay_sim.py).
struct PassTrace {
    int layer_begin = 0;
    int layer_end = 0;
    int n_rows = 0;
    int pos0 = 0;
    int logit_rows = 0;  // rows whose final-layer logits the pass computed
    bool head = false;   // an exit head ran on the last row
    bool prompt = false;
    double seconds = 0.0;
};

struct PassResult {
    std::vector<float> hidden;                 // n_rows x n_embd
    std::vector<std::vector<float>> captured;  // per capture layer, n_rows x n_embd
    std::vector<float> logits;                 // rows x n_vocab (1 row for Logits::last)
    std::vector<float> head_logits;            // n_head_vocab
};

class Forward {
public:
    // own_matmul: multiply quantized weights with our batch-invariant small-batch kernel (ggml/ops/qmatmul.h) where
    // it supports the type, instead of ggml's mul_mat. Off only to measure ggml's kernels side by side. A model on
    // a device runs on that device's backend with ggml's kernels.
    Forward(const Model &model, KvCache &cache, int n_threads, bool own_matmul = true);
    ~Forward();
    Forward(const Forward &) = delete;
    Forward &operator=(const Forward &) = delete;

    void run(const PassRequest &req, PassResult *out);
    // Appends every pass run from now on to `trace` (nullptr: stop); tracing only observes, it changes no pass.
    void set_trace(std::vector<PassTrace> *trace) { trace_ = trace; }
    int n_threads() const { return n_threads_; }
    ggml_backend_t backend() const { return backend_; }
    // Lets the CPU worker threads sleep now instead of spinning a while for the next graph (the next pass wakes
    // them): for measuring several Forwards in one process, whose spinning workers would share the cores.
    void pause_threads() const {
        if (threadpool_)
            ggml_threadpool_pause(threadpool_);
    }

private:
    void run_pass(const PassRequest &req, PassResult *out);
    ggml_tensor *build_layer(ggml_context *ctx, ggml_cgraph *gf, int il, ggml_tensor *x, ggml_tensor *positions,
                             ggml_tensor *mask, int pos0, int n_rows, int n_kv);
    ggml_tensor *build_norm_output(ggml_context *ctx, ggml_tensor *x, ggml_tensor *out_matrix);
    ggml_tensor *attention(ggml_context *ctx, int il, ggml_tensor *q, ggml_tensor *mask, int n_kv) const;
    ggml_tensor *matmul(ggml_context *ctx, ggml_tensor *w, ggml_tensor *x) const;
    struct GraphSlot {
        std::vector<uint8_t> memory;  // the ggml context of the graph
        size_t n_nodes = 0;
        ggml_gallocr_t allocator = nullptr;
        std::string structure;  // of the graph the allocator last planned for
    };
    static std::string structure_of(const PassRequest &req);  // equal for passes that build the same graph
    GraphSlot &slot_for(const PassRequest &req, const std::string &structure);  // after device_decode_ is set

    const Model &model_;
    KvCache &cache_;
    int n_threads_;
    bool own_matmul_;
    // A decode pass on a device: ggml's device kernels are chosen by row count, so such a pass is built from pieces
    // whose kernels a one-row pass also uses (see Forward::run). Set per pass, with the pass's KV index inputs.
    bool device_decode_ = false;
    ggml_tensor *kv_rows_in_ = nullptr;
    ggml_tensor *v_index_in_ = nullptr;
    ggml_backend_t backend_ = nullptr;
    ggml_threadpool_t threadpool_ = nullptr;
    std::map<std::string, GraphSlot> slots_;
    std::vector<float> mask_;
    std::vector<int32_t> positions_;
    std::vector<float> embeddings_;
    std::vector<int64_t> kv_index_;
    std::vector<PassTrace> *trace_ = nullptr;
};

}  // namespace adadecode
