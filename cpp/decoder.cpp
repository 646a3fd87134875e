// The layer-parallel scheduler (AdaDecode, DESIGN.md §1). Read top to bottom it is the algorithm:
//
//   x = last prompt token; P = [] (pending rows: early-emitted tokens whose upper layers are deferred)
//   loop: run x through the segments between exit layers; each segment's pass also carries the pending rows that
//         have reached its first layer. At an exit layer a confident head emits x's successor early: x joins P
//         and the successor starts at layer 0. When x reaches the top, every pending row has too: verify them in
//         order against the final layer, keep what matches, replace the first mismatch and roll the KV back.
//
// Consecutive segments run as one pass when the exit layer between them will not check x and no pending row waits
// there. With no active exit layer the only segment is [0, L) and this is standard decoding, token by token.
//
// Prompt-lookup drafts (NgramDrafter) are a second source of provisional tokens: before x starts at layer 0, the
// drafter may propose the tokens that followed an earlier occurrence of the sequence's suffix. x and all drafted
// tokens but the last become pending rows at layer 0, the last one is the new x, and they travel up together; the
// verification at the top is the same as for early tokens.
#include "decoder.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "exit_policy.h"

namespace adadecode {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// A position whose token has run through layers [0, reached) and whose successor is provisional: emitted early by
// the exit head at exit_index, or proposed by prompt-lookup draft number `draft`.
struct PendingRow {
    int pos;
    int32_t successor;
    int reached;
    int exit_index;                  // -1 for a drafted successor
    int draft;                       // index into the drafts of this verification round, -1 for a head's
    std::vector<float> hidden;       // residual stream after `reached` (empty while reached == 0)
    std::vector<float> draft_probs;  // the head's distribution the successor was sampled from (sampling only)
};

// A prompt-lookup draft awaiting verification, and what verification made of it.
struct DraftRecord {
    int match_length;
    int checked = 0;
    int accepted = 0;
};

}  // namespace

Decoder::Decoder(const Model &model, KvCache &cache, Forward &forward, const ExitHeads *heads)
    : model_(model), cache_(cache), forward_(forward), heads_(heads) {}

void Decoder::prefill(const int32_t *tokens, int n, int pos0, int n_batch, PassRequest::Logits logits,
                      PassResult *last) {
    for (int start = 0; start < n; start += n_batch) {
        PassRequest req;
        req.layer_end = model_.hparams().n_layer;
        req.pos0 = pos0 + start;
        req.n_rows = std::min(n_batch, n - start);
        req.tokens = tokens + start;
        req.logits = start + req.n_rows == n ? logits : PassRequest::Logits::none;
        req.prompt = true;
        forward_.run(req, last);
    }
}

DecodeResult Decoder::generate(const std::vector<int32_t> &prompt, const DecodeOptions &opt,
                               const EndOfGeneration &is_eog, const TokenCallback &on_token, int n_reuse) {
    const HParams &hp = model_.hparams();
    const int n_layer = hp.n_layer;
    const int n_vocab = hp.n_vocab;
    if (prompt.empty()) throw Error("the prompt is empty: give at least one token");
    for (int32_t id : prompt) {
        if (id < 0 || id >= n_vocab) {
            throw Error("invalid token id " + std::to_string(id) + " in the prompt (vocabulary size " +
                        std::to_string(n_vocab) + ")");
        }
    }
    if (static_cast<int>(prompt.size()) >= cache_.n_ctx()) {
        throw Error("the prompt has " + std::to_string(prompt.size()) + " tokens but the context holds " +
                    std::to_string(cache_.n_ctx()) + ": no room to generate (raise n_ctx or shorten the prompt)");
    }
    if (opt.max_tokens < 0) throw Error("max_tokens must be >= 0");
    if (opt.layer_parallel && !heads_) throw Error("layer-parallel decoding needs exit heads: load a heads file");
    if (!(opt.gamma >= 0.0f && opt.gamma <= 1.0f)) throw Error("gamma must be in [0, 1]");
    if (opt.max_pending < 1) throw Error("max_pending must be at least 1");
    if (opt.n_batch < 1) throw Error("n_batch must be at least 1");
    if (n_reuse < 0 || n_reuse >= static_cast<int>(prompt.size()) || n_reuse > cache_.valid()) {
        throw Error("internal: cannot reuse " + std::to_string(n_reuse) + " cached positions for a prompt of " +
                    std::to_string(prompt.size()) + " tokens");
    }

    // Segment boundaries: the active exit layers, then the top.
    std::vector<int> exits;
    std::vector<int> exit_head;  // head index of each active exit
    if (opt.layer_parallel) {
        for (size_t h = 0; h < heads_->layers().size(); ++h) {
            const int layer = heads_->layers()[h];
            const bool active = opt.active_exits.empty() ||
                                std::find(opt.active_exits.begin(), opt.active_exits.end(), layer) !=
                                    opt.active_exits.end();
            if (active) {
                exits.push_back(layer);
                exit_head.push_back(static_cast<int>(h));
            }
        }
        for (int layer : opt.active_exits) {
            if (std::find(exits.begin(), exits.end(), layer) == exits.end()) {
                throw Error("exit layer " + std::to_string(layer) + " has no head in '" + heads_->path() + "'");
            }
        }
    }
    std::vector<int> boundaries = exits;
    boundaries.push_back(n_layer);

    DecodeResult result;
    DecodeStats &st = result.stats;
    st.n_prompt = static_cast<int>(prompt.size());
    st.n_prompt_reused = n_reuse;
    st.exit_layers = exits;
    st.early_per_layer.assign(exits.size(), 0);
    st.accepted_per_layer.assign(exits.size(), 0);
    Sampler sampler(opt.sampling);

    const auto t_prefill = Clock::now();
    cache_.truncate(n_reuse);
    PassResult pass;
    prefill(prompt.data() + n_reuse, static_cast<int>(prompt.size()) - 1 - n_reuse, n_reuse, opt.n_batch,
            PassRequest::Logits::none, &pass);
    st.prefill_seconds = seconds_since(t_prefill);
    const auto t_decode = Clock::now();

    // seq holds the token at every position up to the current token x = seq.back(), provisional ones included.
    std::vector<int32_t> seq = prompt;
    std::vector<PendingRow> pending;
    std::vector<DraftRecord> drafts;
    NgramDrafter drafter(opt.ngram_options);
    // A check reads the head's transform and output rows: its cost next to a one-row pass is about their bytes next
    // to the model's (decoding streams the weights).
    double check_cost = 0.0;
    if (!exits.empty()) {
        const HeadWeights &head = heads_->head(exit_head[0]);
        size_t model_bytes = 0;
        for (const ggml_tensor *w : model_.pass_weights()) model_bytes += ggml_nbytes(w);
        check_cost = static_cast<double>(ggml_nbytes(head.transform) + ggml_nbytes(head.output_rows)) /
                     static_cast<double>(model_bytes);
    }
    ExitPolicy exit_policy(exits, n_layer, check_cost);
    bool done = opt.max_tokens == 0;
    result.finish_reason = "length";

    // Appends one verified token chosen from `logits`; returns false when generation is over.
    auto emit = [&](int32_t token, const float *logits) {
        if (opt.record_logits) opt.record_logits->insert(opt.record_logits->end(), logits, logits + n_vocab);
        if (is_eog(token)) {
            result.finish_reason = "stop";
            return false;
        }
        result.tokens.push_back(token);
        if (!on_token(token)) {
            result.finish_reason = "stop";
            return false;
        }
        if (static_cast<int>(result.tokens.size()) >= opt.max_tokens) return false;
        return true;
    };

    std::vector<float> x_hidden, batch_hidden, probs, target_probs;
    while (!done) {
        const int remaining = opt.max_tokens - static_cast<int>(result.tokens.size());
        // Room for provisional tokens: what verification would emit stays within max_tokens and the context.
        auto room = [&]() {
            const int x_pos = static_cast<int>(seq.size()) - 1;
            return std::min(remaining - static_cast<int>(pending.size()) - 1, cache_.n_ctx() - 1 - x_pos);
        };
        if (opt.ngram) {
            const int drafted_pending = static_cast<int>(
                std::count_if(pending.begin(), pending.end(), [](const PendingRow &r) { return r.draft >= 0; }));
            int match_length = 0;
            const std::vector<int32_t> proposal = drafter.propose(
                seq, std::min(room(), opt.ngram_options.max_draft - drafted_pending), &match_length);
            // x and every drafted token but the last become pending rows at layer 0; the last is the new x.
            for (size_t i = 0; i < proposal.size() && !is_eog(proposal[i]); ++i) {
                const int32_t token = proposal[i];
                if (i == 0) {
                    drafts.push_back(DraftRecord{match_length});
                    ++st.ngram_drafts;
                }
                pending.push_back(PendingRow{static_cast<int>(seq.size()) - 1, token, 0, -1,
                                             static_cast<int>(drafts.size()) - 1, {}, {}});
                seq.push_back(token);
                ++st.ngram_drafted;
            }
        }

        int layer = 0;
        bool emitted_early = false;
        for (size_t seg = 0; seg < boundaries.size() && !emitted_early; ++seg) {
            const int x_pos = static_cast<int>(seq.size()) - 1;
            // The pending rows that have reached `layer` are a suffix of P (older rows are always further up).
            size_t first = pending.size();
            while (first > 0 && pending[first - 1].reached == layer) --first;
            const int n_rows = static_cast<int>(pending.size() - first) + 1;

            // The pass ends at the next exit layer whose head checks x, or where deferred rows wait to join, or at
            // the top: one pass over the layers of several segments costs less than one per segment (measured:
            // splitting the 1.5B into its 4 segments without any exit cost 11 % of a token).
            const int early_pending = static_cast<int>(
                std::count_if(pending.begin(), pending.end(), [](const PendingRow &r) { return r.exit_index >= 0; }));
            // Adaptive exits: while a prompt-lookup draft is in flight its rows already fill the passes, and an early
            // exit on top of it would hold the draft's verification back and, on a rejected draft, be thrown away
            // with it (measured: exits alongside drafts made adadecode+ngram 0.6-0.8x ngram alone); otherwise the
            // exit policy decides, last, because its "no" counts as a skipped check.
            const bool draft_in_flight =
                std::any_of(pending.begin(), pending.end(), [](const PendingRow &r) { return r.draft >= 0; });
            auto head_checks = [&](size_t s) {
                return early_pending < opt.max_pending && room() > 0 &&
                       (!opt.adaptive_exits ||
                        (!draft_in_flight && exit_policy.allow(s, drafter.relative_cost(2) - 1.0)));
            };
            bool may_exit = false;
            for (; boundaries[seg] != n_layer; ++seg) {
                may_exit = head_checks(seg);
                const bool rows_wait = std::any_of(pending.begin(), pending.end(),
                                                   [&](const PendingRow &r) { return r.reached == boundaries[seg]; });
                if (may_exit || rows_wait)
                    break;
            }
            const int next = boundaries[seg];
            const bool at_top = next == n_layer;

            PassRequest req;
            req.layer_begin = layer;
            req.layer_end = next;
            req.pos0 = x_pos - (n_rows - 1);
            req.n_rows = n_rows;
            if (first < pending.size() && pending[first].pos != req.pos0) {
                throw Error("internal: deferred rows are not contiguous with the current token");
            }
            if (layer == 0) {
                req.tokens = seq.data() + req.pos0;
            } else {
                batch_hidden.clear();
                for (size_t i = first; i < pending.size(); ++i) {
                    batch_hidden.insert(batch_hidden.end(), pending[i].hidden.begin(), pending[i].hidden.end());
                }
                batch_hidden.insert(batch_hidden.end(), x_hidden.begin(), x_hidden.end());
                req.hidden = batch_hidden.data();
            }
            req.head = may_exit ? &heads_->head(exit_head[seg]) : nullptr;
            req.want_hidden = !at_top;
            req.logits = at_top ? PassRequest::Logits::all : PassRequest::Logits::none;
            const auto t_pass = Clock::now();
            forward_.run(req, &pass);
            // Timings decide draft lengths; with sampling they would make a seeded output depend on the machine.
            if (opt.sampling.greedy()) drafter.record_pass_cost(n_rows, seconds_since(t_pass) / (next - layer));
            ++st.n_passes;
            if (static_cast<int>(st.rows_per_pass.size()) <= n_rows) st.rows_per_pass.resize(n_rows + 1, 0);
            ++st.rows_per_pass[n_rows];

            if (!at_top) {
                const size_t d = static_cast<size_t>(hp.n_embd);
                for (size_t i = first; i < pending.size(); ++i) {
                    pending[i].hidden.assign(pass.hidden.begin() + (i - first) * d,
                                             pass.hidden.begin() + (i - first + 1) * d);
                    pending[i].reached = next;
                }
                x_hidden.assign(pass.hidden.end() - d, pass.hidden.end());
            }
            layer = next;
            if (!req.head) continue;

            // The exit check: is the head confident about x's successor?
            const int n_head_vocab = heads_->head_vocab_size();
            const float confidence = softmax(pass.head_logits.data(), n_head_vocab, &probs);
            int32_t successor;
            std::vector<float> draft;
            if (opt.sampling.greedy()) {
                successor = heads_->token_of(argmax(pass.head_logits.data(), n_head_vocab));
            } else {
                std::vector<float> full_logits(n_vocab, -INFINITY);
                for (int i = 0; i < n_head_vocab; ++i) full_logits[heads_->token_of(i)] = pass.head_logits[i];
                sampler.distribution(full_logits.data(), n_vocab, &draft);
                successor = sampler.sample_from(draft);
            }
            const bool exits_now = confidence >= opt.gamma && !is_eog(successor);
            exit_policy.record_check(seg, exits_now);
            if (!exits_now)
                continue;
            pending.push_back(PendingRow{x_pos, successor, next, static_cast<int>(seg), -1, x_hidden, std::move(draft)});
            ++st.early_per_layer[seg];
            seq.push_back(successor);
            emitted_early = true;
        }
        if (emitted_early) continue;

        // x reached the top, and every pending row with it: pass.logits holds their final-layer logits in order.
        float *final_logits = pass.logits.data();
        auto process = [&](size_t row) {
            if (opt.logits_processor) {
                const int pos = static_cast<int>(seq.size()) - 1 - static_cast<int>(pending.size() - row);
                opt.logits_processor(seq.data(), pos + 1, final_logits + row * static_cast<size_t>(n_vocab));
            }
        };
        int32_t correction = -1;
        size_t n_kept = 0;
        for (; n_kept < pending.size(); ++n_kept) {
            const PendingRow &row = pending[n_kept];
            process(n_kept);
            const float *row_logits = final_logits + n_kept * static_cast<size_t>(n_vocab);
            ++st.n_verified;
            bool accepted;
            if (opt.sampling.greedy()) {
                const int32_t target = argmax(row_logits, n_vocab);
                accepted = target == row.successor;
                if (!accepted) correction = target;
            } else {
                // Speculative acceptance: keep y with probability min(1, p(y)/q(y)), else draw from (p - q)+.
                // A drafted token is a deterministic proposal: q is one-hot on it.
                const bool drafted = row.draft >= 0;
                auto draft_q = [&](int token) {
                    return drafted ? (token == row.successor ? 1.0f : 0.0f) : row.draft_probs[token];
                };
                sampler.distribution(row_logits, n_vocab, &target_probs);
                const float p = target_probs[row.successor];
                const float q = draft_q(row.successor);
                accepted = q <= p || sampler.uniform() < static_cast<double>(p) / q;
                if (!accepted) {
                    std::vector<float> residual(n_vocab);
                    double mass = 0.0;
                    for (int i = 0; i < n_vocab; ++i) {
                        residual[i] = std::max(0.0f, target_probs[i] - draft_q(i));
                        mass += residual[i];
                    }
                    correction = sampler.sample_from(mass > 0.0 ? residual : target_probs);
                }
            }
            if (row.draft >= 0) {
                ++drafts[row.draft].checked;
                if (accepted) ++drafts[row.draft].accepted;
            } else {
                exit_policy.record(row.exit_index, accepted);
            }
            if (!accepted) break;
            ++st.n_accepted;
            if (row.draft >= 0) {
                ++st.ngram_accepted;
            } else {
                ++st.accepted_per_layer[row.exit_index];
            }
        }
        for (const DraftRecord &d : drafts) drafter.record(d.match_length, d.checked, d.accepted);
        drafts.clear();

        bool keep_going = true;
        for (size_t i = 0; i < n_kept && keep_going; ++i) {
            keep_going = emit(pending[i].successor, final_logits + i * static_cast<size_t>(n_vocab));
        }
        if (keep_going && correction >= 0) {
            // Positions after the mismatch are void in every layer; decoding resumes right after it.
            ++st.n_rollbacks;
            const int resume_pos = pending[n_kept].pos + 1;
            cache_.truncate(resume_pos);
            seq.resize(resume_pos);
            keep_going = emit(correction, final_logits + n_kept * static_cast<size_t>(n_vocab));
            seq.push_back(correction);
        } else if (keep_going) {
            process(pending.size());
            const float *x_logits = final_logits + pending.size() * static_cast<size_t>(n_vocab);
            const int32_t next_token = sampler.sample(x_logits, n_vocab);
            keep_going = emit(next_token, x_logits);
            seq.push_back(next_token);
        }
        pending.clear();
        if (keep_going && static_cast<int>(seq.size()) > cache_.n_ctx()) {
            result.finish_reason = "length";  // the context is full: the next token has no position to run at
            keep_going = false;
        }
        done = !keep_going;
    }
    st.decode_seconds = seconds_since(t_decode);
    st.n_generated = static_cast<int>(result.tokens.size());
    return result;
}

}  // namespace adadecode
