// The scheduler on a toy model: a PassRunner and HeadSet made here, exact integer arithmetic, a per-layer KV cache
// that refuses gaps and misplaced rows. Every output is checked against decoding the toy directly (no scheduler,
// no cache) token for token and logit for logit: rollback at every position, the end token, a stop and max_tokens
// inside a pending window, the context limit, max_pending 1..8, gamma 0, exit subsets, drafts, logits processors,
// and exits on and after the rows of scripted drafts, with a rejection of every kind of row in every kind of
// company. Runs in well under a second.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "decoder.h"
#include "error.h"
#include "sampler.h"

#include "check.h"

using namespace adadecode;

namespace {

constexpr int64_t modulus = 1000003;  // states stay below 2^24: exact as floats
constexpr int n_layer = 6;
constexpr int n_vocab = 8;

int64_t embed(int32_t token, int pos) { return (token * 7919 + pos * 104729 + 12345) % modulus; }
int64_t kv_value(int layer, int64_t state) { return (state * 31 + layer * 17) % modulus; }
int64_t layer_out(int layer, int64_t state, int64_t kv_sum) { return (state * 131 + kv_sum * 137 + layer) % modulus; }

void logits_of(int64_t state, float *logits) {
    for (int v = 0; v < n_vocab; ++v) {
        const uint64_t h = static_cast<uint64_t>(state) * static_cast<uint64_t>(2 * v + 1) * 2654435761ull;
        logits[v] = static_cast<float>((h >> 7) % 1009) / 64.0f;
    }
}

// The toy's final-layer logits for the last position of `prefix`, computed directly.
std::vector<float> reference_logits(const int32_t *prefix, int n) {
    std::vector<int64_t> state(n);
    for (int p = 0; p < n; ++p) state[p] = embed(prefix[p], p);
    for (int l = 0; l < n_layer; ++l) {
        int64_t kv_sum = 0;
        for (int p = 0; p < n; ++p) {
            kv_sum = (kv_sum + kv_value(l, state[p])) % modulus;
            state[p] = layer_out(l, state[p], kv_sum);
        }
    }
    std::vector<float> logits(n_vocab);
    logits_of(state[n - 1], logits.data());
    return logits;
}

// Exit heads that know the right answer (the toy's own final logits, sharpened) except where `wrong` says, and that
// are confident (top probability > 0.85) except where `confident` says (then 1/n_vocab: flat).
class ToyHeads : public HeadSet {
public:
    explicit ToyHeads(std::vector<int> layers) : layers_(std::move(layers)), weights_(layers_.size()) {}
    const std::vector<int> &layers() const override { return layers_; }
    const HeadWeights &head(int index) const override { return weights_[index]; }
    int32_t token_of(int32_t head_index) const override { return head_index; }
    int head_vocab_size() const override { return n_vocab; }
    const std::string &path() const override { return path_; }
    double check_cost(int) const override { return 0.01; }
    int index_of(const HeadWeights *w) const { return static_cast<int>(w - weights_.data()); }

    std::function<bool(int pos, int layer)> wrong = [](int, int) { return false; };
    std::function<bool(int pos, int layer)> confident = [](int, int) { return true; };

private:
    std::vector<int> layers_;
    std::vector<HeadWeights> weights_;
    std::string path_ = "toy heads";
};

// The toy model with a KV cache: the hidden state is (state, position); layer l's cache holds kv_value per position.
class ToyRunner : public PassRunner {
public:
    ToyRunner(int n_ctx, const ToyHeads *heads)
        : n_ctx_(n_ctx), heads_(heads), kv_(n_layer, std::vector<int64_t>(n_ctx)), filled_(n_layer, 0),
          tokens_(n_ctx) {}

    ModelDims dims() const override { return ModelDims{n_layer, 2, n_vocab}; }
    int n_ctx() const override { return n_ctx_; }
    void truncate(int n_positions) override {
        // A rollback after a rejection: note what kind of token was rejected (at n_positions) and what kinds were
        // in flight after it, each position labelled by whoever proposed it last ('d'raft or 'h'ead).
        const auto rejected = sources.find(n_positions);
        if (classes && rejected != sources.end()) {
            std::set<char> after;
            for (int p = n_positions + 1; p < filled_[0]; ++p) {
                const auto it = sources.find(p);
                if (it != sources.end()) after.insert(it->second);
            }
            classes->insert(std::string(1, rejected->second) + ":" + std::string(after.begin(), after.end()));
        }
        for (int &f : filled_) f = std::min(f, n_positions);
        sources.erase(sources.lower_bound(n_positions), sources.end());
    }

    void run(const PassRequest &req, PassResult *out) override {
        const int n = req.n_rows;
        if (n < 1 || req.pos0 < 0 || req.pos0 + n > n_ctx_) throw Error("toy: rows outside the context");
        if (req.layer_begin >= req.layer_end || req.layer_end > n_layer) throw Error("toy: bad layer range");
        std::vector<int64_t> state(n);
        for (int i = 0; i < n; ++i) {
            const int pos = req.pos0 + i;
            if (req.layer_begin == 0) {
                if (!req.tokens) throw Error("toy: a pass from layer 0 needs tokens");
                tokens_[pos] = req.tokens[i];
                state[i] = embed(req.tokens[i], pos);
            } else {
                if (!req.hidden || req.hidden[2 * i + 1] != static_cast<float>(pos)) {
                    throw Error("toy: a row's hidden state belongs to another position");
                }
                state[i] = static_cast<int64_t>(req.hidden[2 * i]);
            }
        }
        for (int l = req.layer_begin; l < req.layer_end; ++l) {
            // Every earlier position must be in this layer's cache (a gap means a deferred row was skipped), and no
            // later one (a rejected position left behind by a missing rollback).
            if (filled_[l] < req.pos0) throw Error("toy: layer " + std::to_string(l) + " has a gap before a pass");
            if (filled_[l] > req.pos0 + n) throw Error("toy: layer " + std::to_string(l) + " holds stale positions");
            for (int i = 0; i < n; ++i) kv_[l][req.pos0 + i] = kv_value(l, state[i]);
            filled_[l] = req.pos0 + n;
            int64_t kv_sum = 0;
            for (int p = 0; p < req.pos0; ++p) kv_sum = (kv_sum + kv_[l][p]) % modulus;
            for (int i = 0; i < n; ++i) {
                kv_sum = (kv_sum + kv_[l][req.pos0 + i]) % modulus;
                state[i] = layer_out(l, state[i], kv_sum);
            }
        }
        ++passes;
        out->hidden.clear();
        if (req.want_hidden) {
            for (int i = 0; i < n; ++i) {
                out->hidden.push_back(static_cast<float>(state[i]));
                out->hidden.push_back(static_cast<float>(req.pos0 + i));
            }
        }
        out->logits.clear();
        if (req.logits != PassRequest::Logits::none) {
            if (req.layer_end != n_layer) throw Error("toy: logits below the top");
            const int first = req.logits == PassRequest::Logits::all ? 0 : n - 1;
            out->logits.resize(static_cast<size_t>(n - first) * n_vocab);
            for (int i = first; i < n; ++i) logits_of(state[i], out->logits.data() + (i - first) * n_vocab);
        }
        if (req.head) {
            const int x_pos = req.pos0 + n - 1;
            const int layer = heads_->layers()[heads_->index_of(req.head)];
            if (layer != req.layer_end) throw Error("toy: a head checks after the wrong layer");
            std::vector<float> right = reference_logits(tokens_.data(), x_pos + 1);
            const int32_t best = argmax(right.data(), n_vocab);
            out->head_logits.assign(n_vocab, 0.0f);
            for (int v = 0; v < n_vocab; ++v) out->head_logits[v] = right[v] * 0.5f;
            const int32_t proposed = heads_->wrong(x_pos, layer) ? (best + 1) % n_vocab : best;
            out->head_logits[proposed] = right[best] * 0.5f + 4.0f;
            if (!heads_->confident(x_pos, layer)) {
                out->head_logits.assign(n_vocab, 1.0f);
            } else {
                sources[x_pos + 1] = 'h';  // the scheduler emits it when gamma <= 0.85
            }
        }
    }

    int passes = 0;
    std::map<int, char> sources;          // who proposed the token at each position (cleared by rollbacks)
    std::set<std::string> *classes = nullptr;  // receives "rejected:in flight after it" for every rollback

private:
    int n_ctx_;
    const ToyHeads *heads_;
    std::vector<std::vector<int64_t>> kv_;
    std::vector<int> filled_;
    std::vector<int32_t> tokens_;
};

// Drafts scripted by position: after x at position `pos`, `length(pos)` tokens (up to the scheduler's limit), each
// the toy's greedy continuation of what precedes it except where `wrong(position of the token)` says.
class ToyDrafter : public Drafter {
public:
    std::vector<int32_t> propose(const std::vector<int32_t> &seq, int limit, int *key) override {
        const int x = static_cast<int>(seq.size()) - 1;
        const int k = std::min(limit, length(x));
        std::vector<int32_t> context = seq, out;
        for (int i = 0; i < k; ++i) {
            const std::vector<float> logits = reference_logits(context.data(), static_cast<int>(context.size()));
            const int pos = x + 1 + i;
            int32_t t = argmax(logits.data(), n_vocab);
            if (wrong(pos)) t = (t + 1) % n_vocab;
            out.push_back(t);
            context.push_back(t);
            if (sources) (*sources)[pos] = 'd';
        }
        *key = k;
        return out;
    }
    void record(int key, int checked, int accepted) override {
        if (checked < 0 || accepted < 0 || accepted > checked || checked > key) ++bad_records;
    }
    double acceptance_of(int, int) const override { return acceptance; }
    double expected_draft() const override { return expected; }

    std::function<int(int pos)> length = [](int) { return 0; };
    std::function<bool(int pos)> wrong = [](int) { return false; };
    double acceptance = 1.0, expected = 0.0;
    std::map<int, char> *sources = nullptr;
    int bad_records = 0;
};

// Bans the token (last token + 3) mod n_vocab: a processor whose effect depends on the context.
void ban_after(const int32_t *context, int n, float *logits) { logits[(context[n - 1] + 3) % n_vocab] = -1e30f; }

struct Case {
    std::vector<int32_t> prompt;
    int max_tokens = 24;
    int n_ctx = 64;
    int32_t eos = -1;        // none
    int stop_after = 1000;   // the callback says stop after this many tokens
    bool processor = false;
};

struct Outcome {
    std::vector<int32_t> tokens;
    std::string finish_reason;
    std::vector<float> logits;
    DecodeStats stats;
    std::string sources;
};

// Standard decoding of the toy without any of the scheduler's machinery.
Outcome reference(const Case &c, const SamplingParams &sampling) {
    Outcome o;
    o.finish_reason = "length";
    Sampler sampler(sampling);
    std::vector<int32_t> seq = c.prompt;
    while (static_cast<int>(o.tokens.size()) < c.max_tokens) {
        std::vector<float> logits = reference_logits(seq.data(), static_cast<int>(seq.size()));
        if (c.processor) ban_after(seq.data(), static_cast<int>(seq.size()), logits.data());
        o.logits.insert(o.logits.end(), logits.begin(), logits.end());
        const int32_t t = sampler.sample(logits.data(), n_vocab);
        if (t == c.eos) {
            o.finish_reason = "stop";
            break;
        }
        o.tokens.push_back(t);
        if (static_cast<int>(o.tokens.size()) >= c.stop_after) {
            o.finish_reason = "stop";
            break;
        }
        seq.push_back(t);
        if (static_cast<int>(seq.size()) > c.n_ctx) break;
    }
    return o;
}

Outcome decode(const Case &c, DecodeOptions opt, const ToyHeads *heads, ToyDrafter *drafter = nullptr,
               std::set<std::string> *classes = nullptr) {
    ToyRunner runner(c.n_ctx, heads);
    runner.classes = classes;
    if (drafter) drafter->sources = &runner.sources;
    Decoder decoder(runner, heads, drafter);
    Outcome o;
    opt.max_tokens = c.max_tokens;
    opt.record_logits = &o.logits;
    if (c.processor) opt.logits_processor = ban_after;
    int n = 0;
    try {
        DecodeResult r = decoder.generate(
            c.prompt, opt, [&c](int32_t t) { return t == c.eos; }, [&](int32_t) { return ++n < c.stop_after; });
        o.tokens = r.tokens;
        o.finish_reason = r.finish_reason;
        o.stats = r.stats;
        o.sources = r.token_sources;
    } catch (const Error &e) {
        o.finish_reason = std::string("error: ") + e.what();
        std::fprintf(stderr, "%s\n", e.what());
    }
    return o;
}

int n_checked = 0;

bool same(const Outcome &want, const Outcome &got, const std::string &what) {
    ++n_checked;
    const bool ok = want.tokens == got.tokens && want.finish_reason == got.finish_reason && want.logits == got.logits;
    if (!ok) std::fprintf(stderr, "differs from standard decoding: %s\n", what.c_str());
    return ok;
}

// Each token names its source, and no more tokens came from a source than verification accepted from it.
bool sources_consistent(const Outcome &o) {
    int accepted_early = 0;
    for (int n : o.stats.accepted_per_layer) accepted_early += n;
    const auto count = [&o](char source) {
        return static_cast<int>(std::count(o.sources.begin(), o.sources.end(), source));
    };
    const int n = static_cast<int>(o.tokens.size());
    return static_cast<int>(o.sources.size()) == n && count('f') + count('e') + count('d') == n &&
           count('e') <= accepted_early && count('d') <= o.stats.ngram_accepted;
}

// The statistics add up: every verified token was provisional, every rollback followed a rejection.
bool consistent(const DecodeStats &st) {
    int early = 0, accepted = 0;
    for (size_t i = 0; i < st.early_per_layer.size(); ++i) {
        early += st.early_per_layer[i];
        accepted += st.accepted_per_layer[i];
    }
    return st.n_verified <= early + st.ngram_drafted && st.n_accepted == accepted + st.ngram_accepted &&
           st.n_rollbacks <= st.n_verified - st.n_accepted && st.n_accepted <= st.n_verified &&
           st.ngram_accepted <= st.ngram_drafted;
}

std::vector<Case> cases() {
    std::vector<Case> out;
    std::mt19937 rng(11);
    for (int i = 0; i < 6; ++i) {
        Case c;
        const int len = 1 + i;
        for (int k = 0; k < len; ++k) c.prompt.push_back(static_cast<int32_t>(rng() % n_vocab));
        out.push_back(c);
    }
    Case repetitive;  // prompt-lookup drafts find matches
    repetitive.prompt = {1, 2, 3, 4, 5, 1, 2, 3, 4, 5, 1, 2};
    out.push_back(repetitive);
    return out;
}

DecodeOptions mode(bool layer_parallel, bool ngram) {
    DecodeOptions o;
    o.layer_parallel = layer_parallel;
    o.ngram = ngram;
    o.adaptive_exits = false;  // adversarial heads must keep exiting
    return o;
}

std::string describe(const Case &c, const DecodeOptions &o, const std::string &extra) {
    std::string s = "prompt of " + std::to_string(c.prompt.size()) + ", max_tokens " + std::to_string(c.max_tokens) +
                    ", n_ctx " + std::to_string(c.n_ctx) + ", eos " + std::to_string(c.eos) + ", stop_after " +
                    std::to_string(c.stop_after) + (c.processor ? ", processor" : "") +
                    (o.layer_parallel ? ", heads" : "") + (o.ngram ? ", ngram" : "") + ", max_pending " +
                    std::to_string(o.max_pending) + ", gamma " + std::to_string(o.gamma) + " " + extra;
    return s;
}

}  // namespace

int main() {
    const SamplingParams greedy;
    ToyHeads heads({2, 4});
    const std::vector<std::pair<std::string, std::function<bool(int, int)>>> patterns = {
        {"always right", [](int, int) { return false; }},
        {"always wrong", [](int, int) { return true; }},
        {"wrong at layer 2", [](int, int layer) { return layer == 2; }},
        {"wrong every third", [](int pos, int layer) { return (pos * 5 + layer) % 3 == 0; }},
    };

    // Every mode, every max_pending, gamma 0 and a confident one, on every pattern of head mistakes.
    for (const Case &c : cases()) {
        const Outcome want = reference(c, greedy);
        CHECK(same(want, decode(c, mode(false, false), &heads), describe(c, mode(false, false), "standard")));
        for (const auto &[name, wrong] : patterns) {
            heads.wrong = wrong;
            for (bool ngram : {false, true}) {
                for (int max_pending = 1; max_pending <= 8; ++max_pending) {
                    for (float gamma : {0.0f, 0.9f}) {
                        DecodeOptions o = mode(true, ngram);
                        o.max_pending = max_pending;
                        o.gamma = gamma;
                        const Outcome got = decode(c, o, &heads);
                        CHECK(same(want, got, describe(c, o, name)));
                        CHECK(consistent(got.stats) && sources_consistent(got));
                        if (name == "always wrong") CHECK(got.sources.find('e') == std::string::npos);
                        if (name == "always wrong" && gamma == 0.0f) CHECK(got.stats.n_rollbacks > 0);
                        if (name == "always right" && gamma == 0.0f && !ngram) {
                            CHECK(got.stats.n_rollbacks == 0 && got.stats.n_accepted > 0);
                            CHECK(got.sources.find('e') != std::string::npos);
                            CHECK(got.sources.find('d') == std::string::npos);
                        }
                    }
                }
            }
            CHECK(same(want, decode(c, mode(false, true), &heads), describe(c, mode(false, true), name)));
        }
    }

    // A rollback at every position: the heads are wrong at exactly one position, each in turn.
    int rollbacks = 0, wrong_positions = 0;
    for (const Case &c : cases()) {
        const Outcome want = reference(c, greedy);
        const int p0 = static_cast<int>(c.prompt.size()) - 1;
        for (int bad = p0; bad < p0 + c.max_tokens; ++bad) {
            heads.wrong = [bad](int pos, int) { return pos == bad; };
            for (int max_pending : {1, 3, 8}) {
                DecodeOptions o = mode(true, false);
                o.max_pending = max_pending;
                o.gamma = 0.0f;
                const Outcome got = decode(c, o, &heads);
                CHECK(same(want, got, describe(c, o, "wrong at position " + std::to_string(bad))));
                CHECK(got.stats.n_rollbacks <= 1);
                rollbacks += got.stats.n_rollbacks;
            }
            ++wrong_positions;
        }
    }
    CHECK(rollbacks > wrong_positions);  // with max_pending > 1 nearly every position is checked by a head

    // The ends of generation inside a pending window: the end token, the callback's stop, max_tokens, the context.
    heads.wrong = [](int pos, int layer) { return (pos + layer) % 7 == 0; };
    for (Case c : cases()) {
        for (int32_t eos = 0; eos < n_vocab; ++eos) {
            for (int stop_after : {1, 2, 5, 1000}) {
                for (int max_tokens : {0, 1, 2, 7, 24}) {
                    for (int n_ctx_extra : {1, 2, 5, 40}) {
                        c.eos = eos;
                        c.stop_after = stop_after;
                        c.max_tokens = max_tokens;
                        c.n_ctx = static_cast<int>(c.prompt.size()) + n_ctx_extra;
                        const Outcome want = reference(c, greedy);
                        for (bool lp : {false, true}) {
                            for (bool ngram : {false, true}) {
                                DecodeOptions o = mode(lp, ngram);
                                o.max_pending = 4;
                                o.gamma = 0.0f;
                                CHECK(same(want, decode(c, o, &heads), describe(c, o, "ends")));
                            }
                        }
                    }
                }
            }
        }
    }

    // A subset of the exit layers, adaptive exits, and a context-dependent logits processor in every mode.
    for (Case c : cases()) {
        c.processor = true;
        const Outcome want = reference(c, greedy);
        for (const auto &[name, wrong] : patterns) {
            heads.wrong = wrong;
            for (bool adaptive : {false, true}) {
                for (bool ngram : {false, true}) {
                    DecodeOptions o = mode(true, ngram);
                    o.adaptive_exits = adaptive;
                    o.gamma = 0.0f;
                    CHECK(same(want, decode(c, o, &heads), describe(c, o, name + " processor")));
                    o.active_exits = {4};
                    const Outcome got = decode(c, o, &heads);
                    CHECK(same(want, got, describe(c, o, name + " processor, exit 4 only")));
                    CHECK(got.stats.exit_layers == std::vector<int>{4});
                }
            }
        }
        CHECK(same(want, decode(c, mode(false, false), &heads), describe(c, mode(false, false), "processor")));
    }

    // Exits on and after the rows of drafts in flight, with scripted drafts and forced exit decisions: random
    // patterns of draft lengths, wrong draft tokens, confident and wrong heads, max_pending and exit subsets, so that
    // every kind of row is rejected with every kind of row in flight after it.
    {
        std::set<std::string> classes;
        std::mt19937 rng(24);
        int early_in_drafts = 0, runs = 0;
        ToyDrafter drafter;
        for (Case c : cases()) {
            c.max_tokens = 32;
            for (bool processor : {false, true}) {
                c.processor = processor;
                const Outcome want = reference(c, greedy);
                for (int trial = 0; trial < 60; ++trial) {
                    const uint32_t salt = rng();
                    const int max_len = 1 + static_cast<int>(rng() % 4);
                    const int draft_every = 1 + static_cast<int>(rng() % 3);
                    const uint32_t wrong_draft = rng() % 4, wrong_head = rng() % 4, unsure = rng() % 3;
                    // A hash of (position, what is asked): the same answer whenever the scheduler asks again.
                    auto mix = [salt](int pos, int what) {
                        return (static_cast<uint32_t>(pos) * 2654435761u ^ salt) + static_cast<uint32_t>(what) * 40503u;
                    };
                    drafter.length = [=](int pos) {
                        return pos % draft_every == 0 ? 1 + static_cast<int>(mix(pos, 1) % max_len) : 0;
                    };
                    drafter.wrong = [=](int pos) { return mix(pos, 2) % 7 < wrong_draft; };
                    heads.wrong = [=](int pos, int layer) { return mix(pos, 3 + layer) % 7 < wrong_head; };
                    heads.confident = [=](int pos, int layer) { return mix(pos, 9 + layer) % 4 >= unsure; };
                    DecodeOptions o = mode(true, true);
                    o.gamma = 0.5f;
                    o.max_pending = 1 + static_cast<int>(rng() % 6);
                    if (rng() % 4 == 0) o.active_exits = {2 + 2 * static_cast<int>(rng() % 2)};
                    const Outcome got = decode(c, o, &heads, &drafter, &classes);
                    CHECK(same(want, got, describe(c, o, "scripted drafts, trial " + std::to_string(trial))));
                    CHECK(consistent(got.stats));
                    int early = 0;
                    for (int e : got.stats.early_per_layer) early += e;
                    CHECK(got.stats.early_in_drafts <= early);
                    early_in_drafts += got.stats.early_in_drafts;
                    ++runs;
                    // Heads held back while drafts are in flight: the same tokens, and no exit on a draft's rows.
                    o.exits_in_drafts = false;
                    const Outcome held = decode(c, o, &heads, &drafter);
                    CHECK(same(want, held, describe(c, o, "scripted drafts, held, trial " + std::to_string(trial))));
                    CHECK(held.stats.early_in_drafts == 0);
                }
            }
        }
        CHECK(drafter.bad_records == 0);
        CHECK(early_in_drafts > runs);
        for (const char *cls : {"d:", "d:d", "d:h", "d:dh", "h:", "h:d", "h:h", "h:dh"}) {
            if (!classes.count(cls)) std::fprintf(stderr, "no rollback of kind %s\n", cls);
            CHECK(classes.count(cls) == 1);
        }
        heads.confident = [](int, int) { return true; };
    }

    // A rejection at every position, of a draft's token or a head's token on or after a draft: drafts of 3 after
    // every third position, heads always confident, exactly one wrong token in each run.
    {
        ToyDrafter drafter;
        drafter.length = [](int pos) { return pos % 3 == 0 ? 3 : 0; };
        for (const Case &c : cases()) {
            const Outcome want = reference(c, greedy);
            const int p0 = static_cast<int>(c.prompt.size());
            for (int bad = p0; bad < p0 + c.max_tokens; ++bad) {
                for (bool draft_wrong : {false, true}) {
                    drafter.wrong = [=](int pos) { return draft_wrong && pos == bad; };
                    heads.wrong = [=](int pos, int) { return !draft_wrong && pos + 1 == bad; };
                    for (int max_pending : {1, 4}) {
                        DecodeOptions o = mode(true, true);
                        o.max_pending = max_pending;
                        o.gamma = 0.5f;
                        const Outcome got = decode(c, o, &heads, &drafter);
                        CHECK(same(want, got, describe(c, o, "scripted drafts, wrong at " + std::to_string(bad))));
                        CHECK(got.stats.n_rollbacks <= 1);
                    }
                }
            }
        }
    }

    // Adaptive exits price an exit by the drafts it rides on: with drafts nearly sure to be rejected an exit on their
    // rows never pays (only the policy's probes exit), with sure drafts it does as often as without drafts.
    {
        ToyDrafter drafter;
        drafter.length = [](int pos) { return pos % 2 == 0 ? 2 : 0; };
        heads.wrong = [](int, int) { return false; };
        Case c = cases()[6];
        c.max_tokens = 48;
        c.n_ctx = 128;
        const Outcome want = reference(c, greedy);
        DecodeOptions o = mode(true, true);
        o.adaptive_exits = true;
        drafter.acceptance = 1.0;
        const Outcome sure = decode(c, o, &heads, &drafter);
        drafter.acceptance = 0.01;
        drafter.expected = 2.0;
        const Outcome doubtful = decode(c, o, &heads, &drafter);
        CHECK(same(want, sure, "adaptive exits, sure drafts"));
        CHECK(same(want, doubtful, "adaptive exits, doubtful drafts"));
        CHECK(sure.stats.early_in_drafts > 2 * doubtful.stats.early_in_drafts);
    }

    // Adaptive exits decide token by token from what verification and the checks taught them: heads that are
    // confident everywhere but wrong at seven positions in eight stop costing rollbacks within a few tokens, heads that
    // are right keep exiting, and the output is standard decoding's either way.
    {
        Case c = cases()[6];
        c.max_tokens = 64;
        c.n_ctx = 160;
        const Outcome want = reference(c, greedy);
        DecodeOptions o = mode(true, false);
        heads.wrong = [](int pos, int) { return pos % 8 != 0; };
        const Outcome stubborn = decode(c, o, &heads);
        o.adaptive_exits = true;
        const Outcome adaptive = decode(c, o, &heads);
        heads.wrong = [](int, int) { return false; };
        const Outcome right = decode(c, o, &heads);
        CHECK(same(want, stubborn, "mostly wrong heads, fixed exits"));
        CHECK(same(want, adaptive, "mostly wrong heads, adaptive exits"));
        CHECK(same(want, right, "right heads, adaptive exits"));
        CHECK(adaptive.stats.n_rollbacks * 3 < stubborn.stats.n_rollbacks);
        CHECK(right.stats.n_rollbacks == 0 && right.sources.find('e') != std::string::npos);
        std::printf("mostly wrong heads: %d rollbacks fixed, %d adaptive; right heads: %zu early tokens\n",
                    stubborn.stats.n_rollbacks, adaptive.stats.n_rollbacks,
                    static_cast<size_t>(std::count(right.sources.begin(), right.sources.end(), 'e')));
    }

    // Sampling: standard decoding draws exactly as the reference does; the other modes keep their tokens valid and
    // their statistics consistent (their exact distribution is test_verify's).
    for (const Case &c : cases()) {
        SamplingParams sampling;
        sampling.temperature = 1.0f;
        sampling.top_k = 0;
        sampling.top_p = 1.0f;
        sampling.min_p = 0.0f;
        for (uint64_t seed = 1; seed <= 3; ++seed) {
            sampling.seed = seed;
            DecodeOptions o = mode(false, false);
            o.sampling = sampling;
            CHECK(same(reference(c, sampling), decode(c, o, &heads), describe(c, o, "sampling")));
            heads.wrong = [](int pos, int) { return pos % 8 != 0; };
            for (bool ngram : {false, true}) {
                o = mode(true, ngram);
                o.sampling = sampling;
                o.gamma = 0.0f;
                const Outcome got = decode(c, o, &heads);
                CHECK(static_cast<int>(got.tokens.size()) == c.max_tokens);
                CHECK(got.logits.size() == got.tokens.size() * n_vocab);
                CHECK(consistent(got.stats) && got.stats.n_verified > 0);
                CHECK(decode(c, o, &heads).tokens == got.tokens);  // seeded: reproducible
            }
            ToyDrafter drafter;  // exits on a draft's rows: the drafted tokens are proposals with a one-hot q
            drafter.length = [](int pos) { return pos % 2 == 0 ? 2 : 0; };
            drafter.wrong = [](int pos) { return pos % 5 == 0; };
            o = mode(true, true);
            o.sampling = sampling;
            o.gamma = 0.0f;
            const Outcome got = decode(c, o, &heads, &drafter);
            CHECK(static_cast<int>(got.tokens.size()) == c.max_tokens);
            CHECK(consistent(got.stats) && got.stats.early_in_drafts > 0);
            CHECK(decode(c, o, &heads, &drafter).tokens == got.tokens);
        }
    }

    // Sampling keeps the distribution with an exit on a draft's last row: the first token is drafted (one-hot q), the
    // second is a head's sample on that draft row; their joint frequency over 4000 seeds against the exact p1 * p2
    // (total variation; the sampling noise of 4000 draws over 64 cells is about 0.05).
    {
        const Case c = cases()[2];
        SamplingParams sampling;
        sampling.temperature = 1.0f;
        sampling.top_k = 0;
        sampling.top_p = 1.0f;
        sampling.min_p = 0.0f;
        const Sampler exact(sampling);
        std::vector<double> want(n_vocab * n_vocab, 0.0), seen(n_vocab * n_vocab, 0.0);
        std::vector<float> p1, p2;
        exact.distribution(reference_logits(c.prompt.data(), static_cast<int>(c.prompt.size())).data(), n_vocab, &p1);
        for (int32_t a = 0; a < n_vocab; ++a) {
            std::vector<int32_t> seq = c.prompt;
            seq.push_back(a);
            exact.distribution(reference_logits(seq.data(), static_cast<int>(seq.size())).data(), n_vocab, &p2);
            for (int32_t b = 0; b < n_vocab; ++b) want[a * n_vocab + b] = p1[a] * p2[b];
        }
        ToyDrafter drafter;
        const int x0 = static_cast<int>(c.prompt.size()) - 1;
        drafter.length = [x0](int pos) { return pos == x0 ? 1 : 0; };
        heads.wrong = [](int pos, int) { return pos % 8 != 0; };
        Case two = c;
        two.max_tokens = 3;  // room for the head's token while the drafted one is pending
        constexpr int n_runs = 4000;
        int exits_on_draft = 0;
        for (uint64_t seed = 1; seed <= n_runs; ++seed) {
            sampling.seed = seed;
            DecodeOptions o = mode(true, true);
            o.sampling = sampling;
            o.gamma = 0.0f;
            const Outcome got = decode(two, o, &heads, &drafter);
            CHECK(got.tokens.size() == 3);
            if (got.tokens.size() == 3) seen[got.tokens[0] * n_vocab + got.tokens[1]] += 1.0 / n_runs;
            exits_on_draft += got.stats.early_in_drafts > 0;
        }
        double tv = 0.0;
        for (size_t i = 0; i < want.size(); ++i) tv += std::abs(want[i] - seen[i]) / 2;
        std::printf("sampling with exits on a draft's row: total variation %.4f over %d runs\n", tv, n_runs);
        CHECK(tv < 0.08);
        CHECK(exits_on_draft == n_runs);
    }

    // The toy itself catches a skipped deferred row: a pass that leaves a gap in a layer's cache.
    {
        ToyRunner runner(16, &heads);
        PassResult out;
        const int32_t tokens[2] = {1, 2};
        PassRequest req;
        req.layer_end = n_layer;
        req.pos0 = 1;
        req.n_rows = 1;
        req.tokens = tokens;
        bool refused = false;
        try {
            runner.run(req, &out);
        } catch (const Error &) {
            refused = true;
        }
        CHECK(refused);
    }

    std::printf("%d scheduler runs checked against standard decoding\n", n_checked);
    if (g_failures) std::fprintf(stderr, "%d checks failed\n", g_failures);
    return g_failures ? 1 : 0;
}
