// The public C++ API of adadecode: load a GGUF model (and optionally its exit heads), tokenize, generate with
// standard or layer-parallel decoding, and read hidden states and weights for training exit heads.
//
// This header and its siblings (options.h: what generate() takes and returns; error.h: the one exception type)
// are the whole public interface; they include no ggml header. Model, Vocab, ExitHeads and HParams are the
// engine's internals (cpp/*.h), declared here so that the bindings and tests that include those can reach them.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "error.h"
#include "options.h"

namespace adadecode {

struct HParams;
class Model;
class Vocab;
class ExitHeads;
struct PassTrace;  // cpp/pass_runner.h

struct EngineOptions {
    int n_ctx = 4096;          // positions in the KV cache (prompt + generated)
    // 0 = one per physical core the process may run on, within its cgroup CPU quota, and fewer while other programs
    // keep some of its CPUs busy (a pass waits at every barrier for a thread that shares its CPU); n: always n
    int n_threads = 0;
    std::string heads_path;    // optional exit-heads sidecar GGUF
    // Matmul weights in ggml's repacked layout where it has one: passes over 2-4 rows cost about one, but a 1-row
    // pass costs about 2x the mmapped one on AVX2 (rows are padded to 4 to stay batch-invariant), so off by default.
    bool repack = false;
    // A ggml device to copy the weights to and compute on ("gpu" for the first GPU, or a name from
    // list_devices()); empty: the CPU computes from the mapped file with our own kernels.
    std::string device;
    // Split the model's layers across these devices (in this order; e.g. "CPU", "RPC0", "RPC1") in proportion to
    // `tensor_split` (one value >= 0 per device), or to the devices' free memory when it is empty. Empty: no split.
    std::vector<std::string> split_devices;
    std::vector<float> tensor_split;
};

class Engine {
public:
    // Throws adadecode::Error naming the problem for a missing, corrupt or unsupported file.
    Engine(const std::string &model_path, const EngineOptions &options);
    ~Engine();
    Engine(const Engine &) = delete;
    Engine &operator=(const Engine &) = delete;

    const HParams &hparams() const;
    const Vocab &vocab() const;
    const Model &model() const;
    int n_ctx() const;
    int n_threads() const;       // the most threads a pass runs on
    int threads_in_use() const;  // the threads the last pass ran on (fewer than n_threads() under others' load)
    std::string device() const;  // where the model computes

    void load_heads(const std::string &path);  // replaces the loaded heads
    const ExitHeads *heads() const;            // null when none are loaded

    // Generates after `prompt`; each verified token goes to `on_token` (return false to stop). The KV entries of
    // the longest common prefix of `prompt` and cached_tokens() are kept (all but the last prompt token at most)
    // and only the rest of the prompt is prefilled; the output is the same as from an empty cache.
    DecodeResult generate(const std::vector<int32_t> &prompt, const DecodeOptions &options,
                          const TokenCallback &on_token);

    // The tokens whose KV entries the cache holds at positions 0, 1, ...: the last prompt and what was generated
    // and run after it. After an exception or a stop mid-generation it holds only what is known to be valid.
    const std::vector<int32_t> &cached_tokens() const;
    void reset();  // forget the cached tokens: the next generation prefills its whole prompt
    // The cached tokens and their KV entries as bytes (a self-checking binary format), and back. load_state refuses
    // with an Error bytes that are corrupt or come from another model or another n_ctx.
    std::string save_state() const;
    void load_state(const std::string &bytes);
    // Identifies the model's weights (file size, tensor directory, a sample of every tensor's bytes).
    uint64_t fingerprint() const;

    // Residual-stream states after each of `layers` (1..n_layer) for teacher-forced `ids`:
    // layers.size() x ids.size() x n_embd floats.
    std::vector<float> hidden_states(const std::vector<int32_t> &ids, const std::vector<int> &layers);
    // Final-layer logits of every position of teacher-forced `ids`: ids.size() x n_vocab floats.
    std::vector<float> logits(const std::vector<int32_t> &ids);
    // The loaded exit head `index`'s logits (over its vocabulary: head_vocab_size() entries, token ids by
    // ExitHeads::token_of) for each of `n_rows` residual states after its layer (n_rows x n_embd floats), exactly
    // as decoding computes them: n_rows x head_vocab_size() floats. The KV cache is not touched.
    std::vector<float> head_logits(int index, const std::vector<float> &hidden, int n_rows);

    // Records every forward pass from now on (on = false: stop), without changing any pass.
    void trace_passes(bool on);
    std::vector<PassTrace> take_pass_trace();  // the passes recorded so far; forgets them
    // Seconds of each of `reps` passes over layers [layer_begin, layer_end) for `n_rows` rows at positions
    // `position`, `position` + 1, ... after a prompt of `position` synthetic tokens; with the final logits of
    // `logit_rows` rows (0, 1 = the last, or n_rows; needs layer_end == n_layer) and, with `head`, the exit head of
    // the first loaded exit layer on the last row. The cache is left holding `position` positions, which the next
    // call reuses; generate() then starts from an empty cache. (cpp/pass_cost.cpp)
    std::vector<double> time_pass(int layer_begin, int layer_end, int n_rows, int position, int logit_rows, bool head,
                                  int reps);

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

}  // namespace adadecode
