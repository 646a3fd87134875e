// What the scheduler asks of a model: one forward pass over a range of layers for a contiguous run of positions
// (PassRunner, implemented by Forward on ggml), and what it asks of exit heads (HeadSet, implemented by
// ExitHeads). Behind these two interfaces a test can put a toy model and check every scheduler path in milliseconds.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

struct ggml_tensor;

namespace adadecode {

// An exit head at one layer: logits = output_rows · norm(f(h)), with f(h) = transform · h (dense), or, when w1 is
// set, the two-layer design f(h) = h + rms(h) · w2 · gelu(w1 · (h / sqrt(mean(h²) + 1e-6))) (heads format 2, "mlp").
struct HeadWeights {
    ggml_tensor *transform = nullptr;    // [n_embd, n_embd] (dense)
    ggml_tensor *output_rows = nullptr;  // [n_embd, n_head_vocab]: the model's output matrix or a subset of its rows
    ggml_tensor *w1 = nullptr;           // [n_embd, R] (mlp)
    ggml_tensor *w2 = nullptr;           // [R, n_embd] (mlp)
    // transform and output_rows in our matmul kernel's packed layout (see Model::packed), or nullptr
    ggml_tensor *packed_transform = nullptr;
    ggml_tensor *packed_output_rows = nullptr;
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

// Runs a pass through `run` and, when `trace` is set, appends it as the scheduler asked for it, with its wall time.
template <class Run>
void run_traced(std::vector<PassTrace> *trace, const PassRequest &req, Run &&run) {
    if (!trace) {
        run();
        return;
    }
    const auto start = std::chrono::steady_clock::now();
    run();
    PassTrace t;
    t.layer_begin = req.layer_begin;
    t.layer_end = req.layer_end;
    t.n_rows = req.n_rows;
    t.pos0 = req.pos0;
    t.logit_rows = req.logits == PassRequest::Logits::all    ? req.n_rows
                   : req.logits == PassRequest::Logits::last ? 1
                                                             : 0;
    t.head = req.head != nullptr;
    t.prompt = req.prompt;
    t.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    trace->push_back(t);
}

struct PassResult {
    std::vector<float> hidden;                 // n_rows x n_embd
    std::vector<std::vector<float>> captured;  // per capture layer, n_rows x n_embd
    std::vector<float> logits;                 // rows x n_vocab (1 row for Logits::last)
    std::vector<float> head_logits;            // n_head_vocab
};

// The sizes the scheduler needs.
struct ModelDims {
    int n_layer = 0;
    int n_embd = 0;
    int n_vocab = 0;
    // The output matrix's share of the weight bytes a one-row pass over every layer reads, logits included (0: not
    // known, every layer's share 1/n_layer). Decoding is bound by reading weights, so this prices a pass that ends
    // with logits against one that does not.
    double output_share = 0.0;
};

// A pass's share of a one-row pass over every layer with logits, by the weights it reads: its layers, the output
// matrix when it computes logits, and the exit head that checks at its end (`check_cost`, see HeadSet).
inline double pass_share(const ModelDims &dims, int layer_begin, int layer_end, bool logits, double check_cost) {
    const double layers = static_cast<double>(layer_end - layer_begin) / dims.n_layer * (1.0 - dims.output_share);
    return layers + (logits ? dims.output_share : 0.0) + check_cost;
}

class PassRunner {
public:
    virtual ~PassRunner() = default;
    virtual ModelDims dims() const = 0;
    virtual int n_ctx() const = 0;  // positions the KV cache holds
    // Writes the rows' K/V at layers [layer_begin, layer_end) into the cache and fills what `req` asks for.
    virtual void run(const PassRequest &req, PassResult *out) = 0;
    virtual void truncate(int n_positions) = 0;  // forget every cached position >= n_positions in every layer
};

class HeadSet {
public:
    virtual ~HeadSet() = default;
    virtual const std::vector<int> &layers() const = 0;  // strictly increasing, in 1..n_layer-1
    virtual const HeadWeights &head(int index) const = 0;
    // Head logits index -> token id (identity when the heads score the whole vocabulary).
    virtual int32_t token_of(int32_t head_index) const = 0;
    virtual int head_vocab_size() const = 0;
    virtual const std::string &path() const = 0;
    // One check of head `index` relative to a one-row pass over every layer.
    virtual double check_cost(int index) const = 0;
};

}  // namespace adadecode
