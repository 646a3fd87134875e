// A model split across devices as one PassRunner: one Forward per device range, all sharing the model and its KV
// cache (each range's weights and cache live on its device). A pass over layers [a, b) that spans several ranges runs
// as consecutive sub-passes, each handing its output rows (n_rows x n_embd floats) to the next.
#pragma once

#include <memory>
#include <vector>

#include "forward.h"

namespace adadecode {

class SplitRunner : public PassRunner {
public:
    SplitRunner(const Model &model, KvCache &cache, int n_threads);
    SplitRunner(const SplitRunner &) = delete;
    SplitRunner &operator=(const SplitRunner &) = delete;

    ModelDims dims() const override { return parts_.front()->dims(); }
    int n_ctx() const override { return cache_.n_ctx(); }
    void run(const PassRequest &req, PassResult *out) override;
    void truncate(int n_positions) override { cache_.truncate(n_positions); }
    // Records each pass as the scheduler asked for it (not its sub-passes), like Forward::set_trace.
    void set_trace(std::vector<PassTrace> *trace) { trace_ = trace; }
    int n_threads() const { return parts_.front()->n_threads(); }
    int threads_in_use() const { return parts_.front()->threads_in_use(); }
    void adapt_threads_to_load() {
        for (auto &part : parts_) part->adapt_threads_to_load();
    }

private:
    void run_parts(const PassRequest &req, PassResult *out);
    const Model &model_;
    KvCache &cache_;
    std::vector<std::unique_ptr<Forward>> parts_;  // one per model_.split() range
    PassResult part_out_;
    std::vector<float> carry_;  // the rows handed from one sub-pass to the next
    std::vector<PassTrace> *trace_ = nullptr;
};

}  // namespace adadecode
