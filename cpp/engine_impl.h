// What an Engine owns, shared by the files that implement its methods (engine.cpp, pass_cost.cpp).
#pragma once

#include <functional>
#include <memory>
#include <vector>

#include "decoder.h"
#include "engine.h"
#include "forward.h"
#include "heads.h"
#include "kv_cache.h"
#include "model.h"
#include "options_internal.h"
#include "split_runner.h"
#include "vocab.h"

namespace adadecode {

struct Engine::Impl {
    void check_ids(const std::vector<int32_t> &ids) const;
    // Empties the KV cache and the record of what it held, so that no later prompt reuses a stale prefix.
    void forget_cache() {
        cached_tokens.clear();
        cache->clear();
    }
    // Runs `ids` through every layer from position 0 in batches shaped like `request`; the cache is left empty.
    void teacher_force(const std::vector<int32_t> &ids, PassRequest request,
                       const std::function<void(size_t start, int rows, const PassResult &)> &consume);

    std::unique_ptr<Model> model;
    std::unique_ptr<Vocab> vocab;
    std::unique_ptr<KvCache> cache;
    std::unique_ptr<Forward> forward;      // a model on one device
    std::unique_ptr<SplitRunner> split;    // or a model split across devices
    PassRunner &runner() const { return split ? static_cast<PassRunner &>(*split) : *forward; }
    std::unique_ptr<ExitHeads> heads;
    std::unique_ptr<Decoder> decoder;
    std::vector<int32_t> cached_tokens;  // what the cache holds at positions 0, 1, ...
    mutable uint64_t fingerprint = 0;    // computed on first use
    std::vector<PassTrace> pass_trace;
};

}  // namespace adadecode
