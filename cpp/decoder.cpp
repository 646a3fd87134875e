// The layer-parallel scheduler (AdaDecode, docs/design.md §1). Read top to bottom it is the algorithm:
//
//   x = last prompt token; P = [] (pending rows: provisional tokens whose upper layers are deferred)
//   loop: propose  - a drafter may propose the tokens after x: x and all drafted tokens but the last join P at
//                    layer 0, the last one is the new x, and they travel up together
//         climb    - run x through the segments between exit layers; each segment's pass also carries the pending
//                    rows that have reached its first layer. At an exit layer a confident head emits x's successor
//                    early: x joins P and the successor starts at layer 0 (back to propose). x may be a draft's
//                    last row: the draft's rows then wait at the exit layer with it (docs/design.md §1, "Exits and
//                    drafts"), and the exit policy weighs the draft's acceptance and the drafted rows a rejection
//                    of the exit would void
//         verify   - x reached the top, and every pending row with it: check them in order against the final layer
//         commit   - emit what matched; replace the first mismatch and roll the KV back to it, or, when all
//                    matched, sample x's successor
//
// Consecutive segments run as one pass when the exit layer between them will not check x and no pending row waits
// there. With no active exit layer and no drafts the only segment is [0, L): standard decoding, token by token.
#include "decoder.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <string>

#include "error.h"
#include "exit_policy.h"
#include "ngram_draft.h"
#include "pass_costs.h"
#include "pending_rows.h"
#include "sampler.h"
#include "verify.h"

namespace adadecode {

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

void check_arguments(const std::vector<int32_t> &prompt, const DecodeOptions &opt, int n_vocab, int n_ctx,
                     const HeadSet *heads) {
    if (prompt.empty()) throw Error("the prompt is empty: give at least one token");
    for (int32_t id : prompt) {
        if (id < 0 || id >= n_vocab) {
            throw Error("invalid token id " + std::to_string(id) + " in the prompt (vocabulary size " +
                        std::to_string(n_vocab) + ")");
        }
    }
    if (static_cast<int>(prompt.size()) >= n_ctx) {
        throw Error("the prompt has " + std::to_string(prompt.size()) + " tokens but the context holds " +
                    std::to_string(n_ctx) + ": no room to generate (raise n_ctx or shorten the prompt)");
    }
    check_options(opt);
    if (opt.layer_parallel && !heads) throw Error("layer-parallel decoding needs exit heads: load a heads file");
}

// The exit layers that check tokens in this generation, and the index of each one's head.
struct ActiveExits {
    std::vector<int> layers;
    std::vector<int> heads;
};

ActiveExits active_exits(const DecodeOptions &opt, const HeadSet *heads) {
    ActiveExits active;
    if (!opt.layer_parallel) return active;
    const std::vector<int> &wanted = opt.active_exits;
    for (size_t h = 0; h < heads->layers().size(); ++h) {
        const int layer = heads->layers()[h];
        if (wanted.empty() || std::find(wanted.begin(), wanted.end(), layer) != wanted.end()) {
            active.layers.push_back(layer);
            active.heads.push_back(static_cast<int>(h));
        }
    }
    for (int layer : wanted) {
        if (std::find(active.layers.begin(), active.layers.end(), layer) == active.layers.end()) {
            throw Error("exit layer " + std::to_string(layer) + " has no head in '" + heads->path() + "'");
        }
    }
    return active;
}

// A prompt-lookup draft awaiting verification, and what verification made of it.
struct DraftRecord {
    int key;  // from Drafter::propose
    int length = 0;
    int checked = 0;
    int accepted = 0;
};

// A greedy check's prediction, kept until x's successor is known: the exit policy learns from it how often the head,
// this confident, names the final layer's token.
struct CheckRecord {
    int pos;
    int slot;
    float confidence;
    int32_t predicted;
};

// One pass of the climb: layers [begin, end) over the pending rows from `first` on, then x. `exit` is the active
// exit whose head checks x after `end`, or -1.
struct PassPlan {
    int begin = 0;
    int end = 0;
    size_t first = 0;
    int n_rows = 0;
    int exit = -1;
};

// The state of one generation and its steps.
class Generation {
public:
    Generation(PassRunner &runner, const HeadSet *heads, Drafter *drafter, const std::vector<int32_t> &prompt,
               const DecodeOptions &opt, const EndOfGeneration &is_eog, const TokenCallback &on_token)
        : runner_(runner), heads_(heads), opt_(opt), is_eog_(is_eog), on_token_(on_token), dims_(runner.dims()),
          exits_(active_exits(opt, heads)), sampler_(opt.sampling), ngram_(opt.ngram_options, pass_costs_),
          drafter_(opt.ngram ? (drafter ? drafter : &ngram_) : nullptr),
          exit_policy_(exits_.layers, dims_.n_layer, dims_.output_share,
                       exits_.layers.empty() ? 0.0 : heads->check_cost(exits_.heads[0])),
          seq_(prompt) {
        boundaries_ = exits_.layers;
        boundaries_.push_back(dims_.n_layer);
        DecodeStats &st = result_.stats;
        st.n_prompt = static_cast<int>(prompt.size());
        st.exit_layers = exits_.layers;
        st.early_per_layer.assign(exits_.layers.size(), 0);
        st.accepted_per_layer.assign(exits_.layers.size(), 0);
        result_.finish_reason = "length";
    }

    void prefill_prompt(int n_cached);
    void propose();
    bool climb();  // true when a head emitted x's successor early
    Verdict verify_pending();
    bool commit(const Verdict &verdict);  // false when generation is over
    DecodeResult finish();

private:
    int x_pos() const { return static_cast<int>(seq_.size()) - 1; }
    int room() const;
    PassPlan plan(int layer, size_t *segment);
    bool head_checks(size_t segment);
    ExitContext exit_context() const;
    void run(const PassPlan &plan);
    bool check_exit(const PassPlan &plan);
    const float *final_logits(size_t row);
    void process(size_t row);
    void resolve_checks(int pos, int32_t successor, bool void_after = false);
    bool emit(int32_t token, const float *logits, char source);

    PassRunner &runner_;
    const HeadSet *heads_;
    const DecodeOptions &opt_;
    const EndOfGeneration &is_eog_;
    const TokenCallback &on_token_;
    const ModelDims dims_;
    const ActiveExits exits_;
    std::vector<int> boundaries_;  // segment ends: the active exit layers, then the top
    DecodeResult result_;
    Sampler sampler_;
    PassCosts pass_costs_;  // read by the n-gram drafter and the exit policy
    NgramDrafter ngram_;
    Drafter *drafter_;
    ExitPolicy exit_policy_;
    std::vector<int32_t> seq_;  // the token at every position up to x = seq_.back(), provisional ones included
    PendingRows pending_;
    std::vector<DraftRecord> drafts_;
    std::vector<CheckRecord> checks_;  // greedy checks whose position's successor is not known yet
    PassResult pass_;
    std::vector<float> x_hidden_, batch_hidden_, head_probs_;
    Clock::time_point t_decode_;
};

void Generation::prefill_prompt(int n_cached) {
    const auto t_prefill = Clock::now();
    runner_.truncate(n_cached);
    result_.stats.n_prompt_reused = n_cached;
    const int n = static_cast<int>(seq_.size()) - 1 - n_cached;
    prefill(runner_, seq_.data() + n_cached, n, n_cached, opt_.n_batch, PassRequest::Logits::none, &pass_);
    result_.stats.prefill_seconds = seconds_since(t_prefill);
    t_decode_ = Clock::now();
}

// Room for provisional tokens: what verification would emit stays within max_tokens and the context.
int Generation::room() const {
    const int remaining = opt_.max_tokens - static_cast<int>(result_.tokens.size());
    return std::min(remaining - static_cast<int>(pending_.size()) - 1, runner_.n_ctx() - 1 - x_pos());
}

void Generation::propose() {
    if (!drafter_) return;
    int key = 0;
    const int limit = std::min(room(), opt_.ngram_options.max_draft - pending_.count_drafts());
    const std::vector<int32_t> proposal = drafter_->propose(seq_, limit, &key);
    // x and every drafted token but the last become pending rows at layer 0; the last is the new x.
    for (size_t i = 0; i < proposal.size() && !is_eog_(proposal[i]); ++i) {
        if (i == 0) {
            drafts_.push_back(DraftRecord{key});
            ++result_.stats.ngram_drafts;
        }
        ++drafts_.back().length;
        const RowSource source = RowSource::draft(static_cast<int>(drafts_.size()) - 1);
        pending_.add(PendingRow{x_pos(), proposal[i], source, 0, {}, {}});
        seq_.push_back(proposal[i]);
        ++result_.stats.ngram_drafted;
    }
}

bool Generation::climb() {
    int layer = 0;
    for (size_t segment = 0; segment < boundaries_.size(); ++segment) {
        const PassPlan p = plan(layer, &segment);
        run(p);
        layer = p.end;
        if (p.exit >= 0 && check_exit(p)) return true;
    }
    return false;
}

// The pass from `layer` ends at the next exit layer whose head checks x, or where deferred rows wait to join, or at
// the top: one pass over the layers of several segments costs less than one per segment (measured: splitting the
// 1.5B into its 4 segments without any exit cost 11 % of a token). Advances `segment` to the pass's last one.
PassPlan Generation::plan(int layer, size_t *segment) {
    PassPlan p;
    p.begin = layer;
    p.first = pending_.first_at(layer);
    p.n_rows = static_cast<int>(pending_.size() - p.first) + 1;
    size_t &s = *segment;
    for (; boundaries_[s] != dims_.n_layer; ++s) {
        if (head_checks(s)) {
            p.exit = static_cast<int>(s);
            break;
        }
        if (pending_.any_at(boundaries_[s])) break;
    }
    p.end = boundaries_[s];
    return p;
}

// Does the head after segment `s` check x? The exit policy decides last, because its "no" counts as a skipped check.
bool Generation::head_checks(size_t s) {
    if (pending_.count_heads() >= opt_.pending_cap() || room() <= 0)
        return false;
    if (!opt_.exits_in_drafts && pending_.count_drafts() > 0) return false;
    return !opt_.adaptive_exits || exit_policy_.allow(s, pass_costs_.relative(2) - 1.0, exit_context());
}

// An exit now rides on every draft in flight (all their rows must be accepted for it to count: each is the last
// row of a draft or follows one), and the drafter will propose after its token (docs/design.md §1, "Exits and
// drafts"). Without drafts in flight or a drafter this is the plain case, and the policy prices exits as it always
// did.
ExitContext Generation::exit_context() const {
    ExitContext context;
    for (size_t i = 0; i < pending_.size(); ++i) context.upstream_acceptance *= pending_[i].acceptance;
    if (!drafter_) return context;
    for (const DraftRecord &d : drafts_) context.upstream_acceptance *= drafter_->acceptance_of(d.key, d.length);
    const int draft_room = std::min(room() - 1, opt_.ngram_options.max_draft - pending_.count_drafts());
    context.voided_rows = std::min(drafter_->expected_draft(), static_cast<double>(std::max(0, draft_room)));
    return context;
}

void Generation::run(const PassPlan &p) {
    const bool at_top = p.end == dims_.n_layer;
    PassRequest req;
    req.layer_begin = p.begin;
    req.layer_end = p.end;
    req.pos0 = x_pos() - (p.n_rows - 1);
    req.n_rows = p.n_rows;
    if (p.first < pending_.size() && pending_[p.first].pos != req.pos0) {
        throw Error("internal: deferred rows are not contiguous with the current token");
    }
    if (p.begin == 0) {
        req.tokens = seq_.data() + req.pos0;
    } else {
        pending_.gather_hidden(p.first, x_hidden_, &batch_hidden_);
        req.hidden = batch_hidden_.data();
    }
    req.head = p.exit >= 0 ? &heads_->head(exits_.heads[p.exit]) : nullptr;
    req.want_hidden = !at_top;
    req.logits = at_top ? PassRequest::Logits::all : PassRequest::Logits::none;
    const auto t_pass = Clock::now();
    runner_.run(req, &pass_);
    // Timings decide draft lengths; with sampling they would make a seeded output depend on the machine.
    if (opt_.sampling.greedy()) {
        const double check = p.exit >= 0 ? heads_->check_cost(exits_.heads[p.exit]) : 0.0;
        pass_costs_.record(PassShape{p.begin, p.end, at_top, p.exit >= 0},
                           pass_share(dims_, p.begin, p.end, at_top, check), p.n_rows, seconds_since(t_pass));
    }
    DecodeStats &st = result_.stats;
    ++st.n_passes;
    if (static_cast<int>(st.rows_per_pass.size()) <= p.n_rows) st.rows_per_pass.resize(p.n_rows + 1, 0);
    ++st.rows_per_pass[p.n_rows];
    if (at_top) return;
    const size_t d = static_cast<size_t>(dims_.n_embd);
    pending_.advance(p.first, p.end, pass_.hidden, d);
    x_hidden_.assign(pass_.hidden.end() - static_cast<std::ptrdiff_t>(d), pass_.hidden.end());
}

// The exit check: is the head confident about x's successor? If so x joins the pending rows and the successor
// becomes x.
bool Generation::check_exit(const PassPlan &p) {
    const int n_head_vocab = heads_->head_vocab_size();
    const float confidence = softmax(pass_.head_logits.data(), n_head_vocab, &head_probs_);
    int32_t successor;
    std::vector<float> q;
    if (opt_.sampling.greedy()) {
        successor = heads_->token_of(argmax(pass_.head_logits.data(), n_head_vocab));
    } else {
        std::vector<float> full_logits(dims_.n_vocab, -INFINITY);
        for (int i = 0; i < n_head_vocab; ++i) full_logits[heads_->token_of(i)] = pass_.head_logits[i];
        sampler_.distribution(full_logits.data(), dims_.n_vocab, &q);
        successor = sampler_.sample_from(q);
    }
    const bool greedy = opt_.sampling.greedy();
    if (greedy)
        checks_.push_back(CheckRecord{x_pos(), p.exit, confidence, successor});
    bool exits_now = confidence >= opt_.gamma && !is_eog_(successor);
    if (exits_now && greedy && opt_.adaptive_exits) {
        exits_now = exit_policy_.exit_pays(p.exit, confidence, pass_costs_.relative(2) - 1.0, exit_context());
    }
    exit_policy_.record_check(p.exit, exits_now);
    if (!exits_now) return false;
    result_.stats.early_in_drafts += pending_.count_drafts() > 0;
    // Under sampling acceptance is not agreement; the layer's measured acceptance stands in.
    const double acceptance = greedy ? exit_policy_.agreement(p.exit, confidence) : exit_policy_.acceptance(p.exit);
    pending_.add(PendingRow{x_pos(), successor, RowSource::head(p.exit), p.end, x_hidden_, std::move(q), acceptance});
    ++result_.stats.early_per_layer[p.exit];
    seq_.push_back(successor);
    return true;
}

// Row `row` of the last pass (the pending rows, then x), with the logits processor applied.
const float *Generation::final_logits(size_t row) {
    process(row);
    return pass_.logits.data() + row * static_cast<size_t>(dims_.n_vocab);
}

void Generation::process(size_t row) {
    if (!opt_.logits_processor) return;
    const int pos = row < pending_.size() ? pending_[row].pos : x_pos();
    opt_.logits_processor(seq_.data(), pos + 1, pass_.logits.data() + row * static_cast<size_t>(dims_.n_vocab));
}

Verdict Generation::verify_pending() {
    std::vector<ProvisionalToken> tokens;
    for (size_t i = 0; i < pending_.size(); ++i) {
        const PendingRow &row = pending_[i];
        tokens.push_back(ProvisionalToken{row.successor, row.source.is_head() ? &row.head_probs : nullptr});
    }
    const Verdict verdict = verify(tokens, [this](size_t row) { return final_logits(row); }, dims_.n_vocab, sampler_);
    DecodeStats &st = result_.stats;
    for (size_t i = 0; i < verdict.checked(); ++i) {
        const RowSource &source = pending_[i].source;
        const bool accepted = i < verdict.kept;
        ++st.n_verified;
        st.n_accepted += accepted;
        if (source.is_draft()) {
            DraftRecord &draft = drafts_[source.draft_number()];
            ++draft.checked;
            draft.accepted += accepted;
            st.ngram_accepted += accepted;
        } else {
            exit_policy_.record(source.exit_index(), accepted);
            st.accepted_per_layer[source.exit_index()] += accepted;
        }
    }
    for (const DraftRecord &d : drafts_) drafter_->record(d.key, d.checked, d.accepted);
    drafts_.clear();
    return verdict;
}

// The successor of `pos` is known: every check made there learns whether it named it. With `void_after`, checks
// after `pos` ran on provisional tokens that this successor replaces: they are dropped.
void Generation::resolve_checks(int pos, int32_t successor, bool void_after) {
    size_t kept = 0;
    for (const CheckRecord &c : checks_) {
        if (c.pos == pos) {
            exit_policy_.record_agreement(c.slot, c.confidence, c.predicted == successor);
        } else if (c.pos < pos || !void_after) {
            checks_[kept++] = c;
        }
    }
    checks_.resize(kept);
}

bool Generation::commit(const Verdict &verdict) {
    const float *logits = pass_.logits.data();
    const size_t n_vocab = static_cast<size_t>(dims_.n_vocab);
    bool keep_going = true;
    for (size_t i = 0; i < verdict.kept && keep_going; ++i) {
        resolve_checks(pending_[i].pos, pending_[i].successor);
        keep_going = emit(pending_[i].successor, logits + i * n_vocab, pending_[i].source.is_head() ? 'e' : 'd');
    }
    if (keep_going && verdict.rejected()) {
        // Positions after the mismatch are void in every layer; decoding resumes right after it.
        ++result_.stats.n_rollbacks;
        const int resume_pos = pending_[verdict.kept].pos + 1;
        runner_.truncate(resume_pos);
        seq_.resize(resume_pos);
        resolve_checks(resume_pos - 1, verdict.correction, true);
        keep_going = emit(verdict.correction, logits + verdict.kept * n_vocab, 'f');
        seq_.push_back(verdict.correction);
    } else if (keep_going) {
        const float *x_logits = final_logits(pending_.size());
        const int32_t next_token = sampler_.sample(x_logits, dims_.n_vocab);
        resolve_checks(x_pos(), next_token);
        keep_going = emit(next_token, x_logits, 'f');
        seq_.push_back(next_token);
    }
    pending_.clear();
    if (keep_going && static_cast<int>(seq_.size()) > runner_.n_ctx()) {
        result_.finish_reason = "length";  // the context is full: the next token has no position to run at
        keep_going = false;
    }
    return keep_going;
}

// Appends one verified token chosen from `logits` (its source as DecodeResult::token_sources names it); returns false
// when generation is over.
bool Generation::emit(int32_t token, const float *logits, char source) {
    if (opt_.record_logits) opt_.record_logits->insert(opt_.record_logits->end(), logits, logits + dims_.n_vocab);
    if (is_eog_(token)) {
        result_.finish_reason = "stop";
        return false;
    }
    result_.tokens.push_back(token);
    result_.token_sources.push_back(source);
    if (!on_token_(token)) {
        result_.finish_reason = "stop";
        return false;
    }
    return static_cast<int>(result_.tokens.size()) < opt_.max_tokens;
}

DecodeResult Generation::finish() {
    result_.stats.decode_seconds = seconds_since(t_decode_);
    result_.stats.n_generated = static_cast<int>(result_.tokens.size());
    for (int rows = 1; rows <= pass_costs_.max_rows(); ++rows)
        result_.stats.pass_costs.push_back(pass_costs_.relative(rows));
    return std::move(result_);
}

}  // namespace

void prefill(PassRunner &runner, const int32_t *tokens, int n, int pos0, int n_batch, PassRequest::Logits logits,
             PassResult *last) {
    for (int start = 0; start < n; start += n_batch) {
        PassRequest req;
        req.layer_end = runner.dims().n_layer;
        req.pos0 = pos0 + start;
        req.n_rows = std::min(n_batch, n - start);
        req.tokens = tokens + start;
        req.logits = start + req.n_rows == n ? logits : PassRequest::Logits::none;
        req.prompt = true;
        runner.run(req, last);
    }
}

Decoder::Decoder(PassRunner &runner, const HeadSet *heads, Drafter *drafter)
    : runner_(runner), heads_(heads), drafter_(drafter) {}

DecodeResult Decoder::generate(const std::vector<int32_t> &prompt, const DecodeOptions &opt,
                               const EndOfGeneration &is_eog, const TokenCallback &on_token, int n_cached) {
    check_arguments(prompt, opt, runner_.dims().n_vocab, runner_.n_ctx(), heads_);
    if (n_cached < 0 || n_cached >= static_cast<int>(prompt.size())) {
        throw Error("internal: cannot reuse " + std::to_string(n_cached) + " cached positions for a prompt of " +
                    std::to_string(prompt.size()) + " tokens");
    }
    Generation g(runner_, heads_, drafter_, prompt, opt, is_eog, on_token);
    g.prefill_prompt(n_cached);
    bool going = opt.max_tokens > 0;
    while (going) {
        g.propose();
        if (g.climb()) continue;  // x's successor was emitted early and climbs next
        going = g.commit(g.verify_pending());
    }
    return g.finish();
}

}  // namespace adadecode
