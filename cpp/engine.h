// The public C++ API of adadecode: load a GGUF model (and optionally its exit heads), tokenize, generate with
// standard or layer-parallel decoding, and read hidden states and weights for training exit heads.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "decoder.h"

namespace adadecode {

class Vocab;

struct EngineOptions {
    int n_ctx = 4096;          // positions in the KV cache (prompt + generated)
    int n_threads = 0;         // 0 = number of online CPU cores
    std::string heads_path;    // optional exit-heads sidecar GGUF
    // Matmul weights in ggml's repacked layout where it has one: passes over 2-4 rows cost about one, but a 1-row
    // pass costs about 2x the mmapped one on AVX2 (rows are padded to 4 to stay batch-invariant), so off by default.
    bool repack = false;
    // A ggml device to copy the weights to and compute on ("gpu" for the first GPU, or a name from
    // list_devices()); empty: the CPU computes from the mapped file with our own kernels.
    std::string device;
};

class Engine {
public:
    // Throws adadecode::Error naming the problem for a missing, corrupt or unsupported file.
    Engine(const std::string &model_path, const EngineOptions &options);
    ~Engine();

    const HParams &hparams() const;
    const Vocab &vocab() const { return *vocab_; }
    const Model &model() const { return *model_; }
    int n_ctx() const;
    int n_threads() const;
    std::string device() const;  // where the model computes

    void load_heads(const std::string &path);  // replaces the loaded heads
    const ExitHeads *heads() const { return heads_.get(); }

    // Generates after `prompt`; each verified token goes to `on_token` (return false to stop).
    DecodeResult generate(const std::vector<int32_t> &prompt, const DecodeOptions &options,
                          const TokenCallback &on_token);

    // Residual-stream states after each of `layers` (1..n_layer) for teacher-forced `ids`:
    // layers.size() x ids.size() x n_embd floats.
    std::vector<float> hidden_states(const std::vector<int32_t> &ids, const std::vector<int> &layers);
    // Final-layer logits of every position of teacher-forced `ids`: ids.size() x n_vocab floats.
    std::vector<float> logits(const std::vector<int32_t> &ids);

    // Records every forward pass from now on (on = false: stop), without changing any pass.
    void trace_passes(bool on);
    std::vector<PassTrace> take_pass_trace();  // the passes recorded so far; forgets them
    // Seconds of each of `reps` passes over layers [layer_begin, layer_end) for `n_rows` rows at positions
    // `position`, `position` + 1, ... after a prompt of `position` synthetic tokens; with the final logits of
    // `logit_rows` rows (0, 1 = the last, or n_rows; needs layer_end == n_layer) and, with `head`, the exit head of
    // the first loaded exit layer on the last row. The cache is left holding `position` positions, which the next
    // call reuses (generate() starts from an empty cache anyway). (cpp/pass_cost.cpp)
    std::vector<double> time_pass(int layer_begin, int layer_end, int n_rows, int position, int logit_rows, bool head,
                                  int reps);

private:
    void check_ids(const std::vector<int32_t> &ids) const;
    // Runs `ids` through every layer from position 0 in batches shaped like `request`; the cache is left empty.
    void teacher_force(const std::vector<int32_t> &ids, PassRequest request,
                       const std::function<void(size_t start, int rows, const PassResult &)> &consume);

    std::unique_ptr<Model> model_;
    std::unique_ptr<Vocab> vocab_;
    std::unique_ptr<KvCache> cache_;
    std::unique_ptr<Forward> forward_;
    std::unique_ptr<ExitHeads> heads_;
    std::unique_ptr<Decoder> decoder_;
    std::vector<PassTrace> pass_trace_;
};

}  // namespace adadecode
