// Exit heads: the sidecar GGUF (general.type = "adapter", adapter.type = "exit_heads") holding one d x d transform
// per exit layer and optionally the vocabulary subset the heads score. See docs/heads_format.md.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "forward.h"
#include "model.h"

namespace adadecode {

class ExitHeads {
public:
    // Reads `path` and checks it against `model` (architecture, depth, width, vocabulary, layer range).
    ExitHeads(const std::string &path, const Model &model);
    ~ExitHeads();
    ExitHeads(const ExitHeads &) = delete;
    ExitHeads &operator=(const ExitHeads &) = delete;

    const std::vector<int> &layers() const { return layers_; }
    const HeadWeights &head(int index) const { return heads_[index]; }
    // Head logits index -> token id (identity when the heads score the whole vocabulary).
    int32_t token_of(int32_t head_index) const { return vocab_.empty() ? head_index : vocab_[head_index]; }
    int head_vocab_size() const { return head_vocab_; }
    const std::string &path() const { return path_; }

private:
    void load(const Model &model);
    void release();

    std::string path_;
    std::vector<int> layers_;
    std::vector<HeadWeights> heads_;
    std::vector<int32_t> vocab_;
    int head_vocab_ = 0;
    ggml_context *ctx_ = nullptr;
    ggml_backend_buffer_t buffer_ = nullptr;
};

}  // namespace adadecode
