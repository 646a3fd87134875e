// Timing single passes of any shape, for the pass-cost curves that price decoding traces (bench/replay_sim.py,
// bench/gpu_scale/): what a pass over layers [a, b) for k rows costs on this machine and device.
#include <chrono>

#include "engine_impl.h"

namespace adadecode {

void Engine::trace_passes(bool on) {
    std::vector<PassTrace> *trace = on ? &impl_->pass_trace : nullptr;
    if (impl_->split) {
        impl_->split->set_trace(trace);
    } else {
        impl_->forward->set_trace(trace);
    }
}

std::vector<PassTrace> Engine::take_pass_trace() {
    std::vector<PassTrace> out;
    out.swap(impl_->pass_trace);
    return out;
}

std::vector<double> Engine::time_pass(int layer_begin, int layer_end, int n_rows, int position, int logit_rows,
                                      bool head, int reps) {
    Impl &m = *impl_;
    const HParams &hp = hparams();
    if (layer_begin < 0 || layer_end > hp.n_layer || layer_begin >= layer_end) {
        throw Error("time_pass: layers [" + std::to_string(layer_begin) + ", " + std::to_string(layer_end) +
                    ") are not a non-empty range inside 0.." + std::to_string(hp.n_layer));
    }
    if (n_rows < 1 || position < 1 || position + n_rows > m.cache->n_ctx()) {
        throw Error("time_pass: " + std::to_string(n_rows) + " rows at position " + std::to_string(position) +
                    " need n_rows >= 1, position >= 1 and position + n_rows <= n_ctx (" +
                    std::to_string(m.cache->n_ctx()) + ")");
    }
    if (logit_rows != 0 && logit_rows != 1 && logit_rows != n_rows) {
        throw Error("time_pass: logit_rows must be 0, 1 or n_rows, got " + std::to_string(logit_rows));
    }
    if (logit_rows > 0 && layer_end != hp.n_layer) {
        throw Error("time_pass: logits need layer_end == n_layer (" + std::to_string(hp.n_layer) + ")");
    }
    if (head && !m.heads) throw Error("time_pass: head=True needs exit heads (load_heads)");
    if (reps < 1) throw Error("time_pass: reps must be >= 1, got " + std::to_string(reps));

    // Token ids spread over the vocabulary, the same for every call, so any two measurements see the same cache.
    std::vector<int32_t> ids(static_cast<size_t>(position + n_rows));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7919 + 13) % hp.n_vocab);
    // The cost of a pass does not depend on the values in the cache, only on how many positions it holds: a cache
    // that already holds `position` positions in every layer (the previous call's) is reused.
    bool filled = true;
    for (int il = 0; il < hp.n_layer; ++il) filled = filled && m.cache->filled(il) >= position;
    PassResult out;
    m.cached_tokens.clear();  // the synthetic tokens are not worth reusing for a generation
    if (!filled) {
        m.forget_cache();
        PassRequest fill;
        fill.layer_end = hp.n_layer;
        fill.n_rows = position;
        fill.tokens = ids.data();
        fill.prompt = true;
        m.runner().run(fill, &out);
    }

    std::vector<float> hidden;
    if (layer_begin > 0) {  // embeddings stand in for the states after layer_begin: same size, sane values
        hidden.resize(static_cast<size_t>(n_rows) * hp.n_embd);
        m.model->embed(ids.data() + position, n_rows, hidden.data());
    }
    PassRequest req;
    req.layer_begin = layer_begin;
    req.layer_end = layer_end;
    req.pos0 = position;
    req.n_rows = n_rows;
    req.tokens = layer_begin == 0 ? ids.data() + position : nullptr;
    req.hidden = layer_begin == 0 ? nullptr : hidden.data();
    req.logits = logit_rows == 0   ? PassRequest::Logits::none
                 : logit_rows == 1 && n_rows > 1 ? PassRequest::Logits::last
                                                 : PassRequest::Logits::all;
    req.head = head ? &m.heads->head(0) : nullptr;
    std::vector<double> seconds;
    seconds.reserve(static_cast<size_t>(reps));
    for (int r = 0; r < reps; ++r) {
        m.cache->truncate(position);
        const auto start = std::chrono::steady_clock::now();
        m.runner().run(req, &out);
        seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    m.cache->truncate(position);
    return seconds;
}

}  // namespace adadecode
