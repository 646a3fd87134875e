// Exit heads: the sidecar GGUF (general.type = "adapter", adapter.type = "exit_heads") holding one d x d transform
// per exit layer and optionally the vocabulary subset the heads score. See docs/heads_format.md.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "ggml-cpp.h"
#include "model.h"
#include "pass_runner.h"

namespace adadecode {

class ExitHeads : public HeadSet {
public:
    // Reads `path` and checks it against `model` (architecture, depth, width, vocabulary, layer range).
    ExitHeads(const std::string &path, const Model &model);
    ExitHeads(const ExitHeads &) = delete;
    ExitHeads &operator=(const ExitHeads &) = delete;

    const std::vector<int> &layers() const override { return layers_; }
    const HeadWeights &head(int index) const override { return heads_[index]; }
    int32_t token_of(int32_t head_index) const override { return vocab_.empty() ? head_index : vocab_[head_index]; }
    int head_vocab_size() const override { return head_vocab_; }
    const std::string &path() const override { return path_; }
    double check_cost(int index) const override { return check_cost_[index]; }

private:
    void load(const Model &model);

    std::string path_;
    std::vector<int> layers_;
    std::vector<HeadWeights> heads_;
    std::vector<int32_t> vocab_;
    int head_vocab_ = 0;
    std::vector<double> check_cost_;
    ggml_context_ptr ctx_;
    ggml_backend_buffer_ptr buffer_;
    ggml_context_ptr packed_ctx_;  // the heads' matrices in our kernel's packed layout, where the model packs its own
    ggml_backend_buffer_ptr packed_buffer_;
};

}  // namespace adadecode
