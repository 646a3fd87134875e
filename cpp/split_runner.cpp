#include "split_runner.h"

#include <algorithm>

#include "error.h"

namespace adadecode {

SplitRunner::SplitRunner(const Model &model, KvCache &cache, int n_threads) : model_(model), cache_(cache) {
    for (const LayerRange &r : model.split()) {
        parts_.push_back(std::make_unique<Forward>(model, cache, n_threads, false, r.device));
    }
    if (parts_.empty()) throw Error("internal: SplitRunner needs a split model");
}

void SplitRunner::run(const PassRequest &req, PassResult *out) {
    run_traced(trace_, req, [&] { run_parts(req, out); });
}

void SplitRunner::run_parts(const PassRequest &req, PassResult *out) {
    const std::vector<LayerRange> &ranges = model_.split();
    const int n_embd = model_.hparams().n_embd;
    const size_t last_part = parts_.size() - 1;
    out->hidden.clear();
    out->captured.assign(req.capture_layers.size(), {});
    out->logits.clear();
    out->head_logits.clear();
    // The head's transform and the output matrix live with the last range: a pass ending on another device hands
    // its last row there for the head.
    bool head_done = req.head == nullptr;
    const float *input = req.hidden;
    bool ran = false;
    for (size_t p = 0; p < parts_.size(); ++p) {
        const int begin = std::max(req.layer_begin, ranges[p].layer_begin);
        const int end = std::min(req.layer_end, ranges[p].layer_end);
        if (begin >= end) continue;
        const bool last_sub = end == req.layer_end;
        PassRequest sub = req;
        sub.layer_begin = begin;
        sub.layer_end = end;
        sub.tokens = begin == 0 ? req.tokens : nullptr;
        sub.hidden = begin == 0 && req.tokens ? nullptr : input;
        sub.capture_layers.clear();
        for (int c : req.capture_layers) {
            if (c > begin && c <= end) sub.capture_layers.push_back(c);
        }
        const bool head_here = last_sub && req.head && p == last_part;
        sub.head = head_here ? req.head : nullptr;
        sub.logits = last_sub ? req.logits : PassRequest::Logits::none;
        sub.want_hidden = !last_sub || req.want_hidden || (req.head && !head_here);
        parts_[p]->run(sub, &part_out_);
        ran = true;
        for (size_t i = 0, j = 0; i < req.capture_layers.size() && j < sub.capture_layers.size(); ++i) {
            if (req.capture_layers[i] == sub.capture_layers[j]) out->captured[i] = std::move(part_out_.captured[j++]);
        }
        if (head_here) {
            out->head_logits = std::move(part_out_.head_logits);
            head_done = true;
        }
        if (last_sub) {
            if (!part_out_.logits.empty()) out->logits = std::move(part_out_.logits);
            if (sub.want_hidden) out->hidden = std::move(part_out_.hidden);
            break;
        }
        carry_.swap(part_out_.hidden);
        input = carry_.data();
    }
    if (!ran) throw Error("internal: a pass over no layers of the split model");
    if (!head_done) {
        // A pass with no layers on the last device: the head alone on the last row.
        PassRequest head;
        head.layer_begin = head.layer_end = req.layer_end;
        head.pos0 = req.pos0 + req.n_rows - 1;
        head.n_rows = 1;
        head.hidden = out->hidden.data() + static_cast<size_t>(req.n_rows - 1) * n_embd;
        head.head = req.head;
        head.prompt = req.prompt;
        parts_[last_part]->run(head, &part_out_);
        out->head_logits = std::move(part_out_.head_logits);
        if (!req.want_hidden) out->hidden.clear();
    }
}

}  // namespace adadecode
