// The prompt-lookup drafter on its own: what it proposes for a sequence, and how measured acceptance and pass
// costs change how much it proposes (the costs themselves: test_pass_costs.cpp).
#include <cstdio>
#include <vector>

#include "error.h"
#include "ngram_draft.h"
#include "ngram_replay.h"

#include "check.h"

using namespace adadecode;

namespace {

using Tokens = std::vector<int32_t>;

// Pass costs that make a batched pass nearly free (so only acceptance limits the draft) or as dear as k rows.
PassCosts costs_of(double extra_row_cost) {
    PassCosts costs;
    for (int rows = 1; rows <= 9; ++rows) {
        for (int i = 0; i < 10; ++i)
            costs.record(PassShape{0, 24, true, false}, 1.0, rows, 1e-3 * (1.0 + extra_row_cost * (rows - 1)));
    }
    return costs;
}

void test_lookup() {
    NgramOptions o;
    o.max_draft = 4;
    const PassCosts free_rows = costs_of(0.0);
    NgramDrafter d(o, free_rows);
    int match = 0;
    // "7 8" occurs twice before the end; the most recent occurrence is followed by 9 1 2, the older by 3 4 5.
    const Tokens seq{7, 8, 3, 4, 5, 6, 7, 8, 9, 1, 2, 0, 7, 8};
    CHECK((d.propose(seq, 10, &match) == Tokens{9, 1, 2, 0}));
    CHECK(match == 2);
    CHECK((d.propose(seq, 2, &match) == Tokens{9, 1}));  // the caller's limit
    CHECK(d.propose(seq, 0, &match).empty());
    // The longest suffix that occurred wins: "5 6 7 8" is followed by 9 once, "8" alone by 3 elsewhere.
    const Tokens longer{5, 6, 7, 8, 9, 8, 3, 5, 6, 7, 8};
    CHECK((d.propose(longer, 1, &match) == Tokens{9}));
    CHECK(match == 4);
    // Nothing repeats: nothing to propose.
    CHECK((d.propose(Tokens{1, 2, 3, 4}, 4, &match).empty()));
    CHECK(match == 0);
    CHECK((d.propose(Tokens{1}, 4, &match).empty()));
    // The continuation may run into the suffix itself (a repeated token).
    CHECK((d.propose(Tokens{5, 5, 5}, 4, &match) == Tokens{5}));
}

void test_context_picks_the_occurrence() {
    NgramOptions o;
    o.max_draft = 2;
    o.max_match = 2;  // so that the occurrences below all match the same suffix, "7 8"
    const PassCosts free_rows = costs_of(0.0);
    NgramDrafter d(o, free_rows);
    int match = 0;
    // The older "7 8" is preceded by "6", as the end is; the more recent by "5": the older one's continuation.
    CHECK((d.propose(Tokens{6, 7, 8, 1, 2, 5, 7, 8, 3, 4, 6, 7, 8}, 2, &match) == Tokens{1, 2}));
    CHECK(match == 2);
    // Contexts of 5 and 3 tokens ("0 3 2 7 8" against "1 2 7 8" before the end's "0 3 2 7 8").
    CHECK((d.propose(Tokens{0, 3, 2, 7, 8, 5, 5, 1, 2, 7, 8, 4, 4, 9, 0, 3, 2, 7, 8}, 2, &match) == Tokens{5, 5}));
    // Equal contexts: the most recent occurrence.
    CHECK((d.propose(Tokens{1, 7, 8, 3, 2, 7, 8, 4, 0, 7, 8}, 1, &match) == Tokens{4}));
}

void test_acceptance_shapes_the_draft() {
    NgramOptions o;
    o.max_draft = 8;
    const Tokens seq{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2};
    int match = 0;

    const PassCosts costs = costs_of(0.1);
    NgramDrafter good(o, costs);
    for (int i = 0; i < 20; ++i) good.record(2, 8, 8);  // every drafted token was right
    CHECK(good.propose(seq, 8, &match).size() == 8);

    NgramDrafter bad(o, costs);
    for (int i = 0; i < 20; ++i) bad.record(2, 1, 0);  // every first token was wrong
    int proposed = 0, probes = 0;
    for (int i = 0; i < 64; ++i) {
        const size_t n = bad.propose(seq, 8, &match).size();
        proposed += n ? 1 : 0;
        probes += n == 1 ? 1 : 0;
    }
    // Declined, except a one-token probe now and then so the match length can prove itself again.
    CHECK(proposed == probes);
    CHECK(proposed >= 2 && proposed <= 8);

    // Recovery: once drafts of this length are accepted again, they are made again.
    for (int i = 0; i < 60; ++i) bad.record(2, 4, 4);
    CHECK(bad.propose(seq, 8, &match).size() >= 4);
}

void test_costs_shape_the_draft() {
    NgramOptions o;
    o.max_draft = 8;
    const Tokens seq{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 1, 2};
    int match = 0;
    // Acceptance 80 %: with free batched rows a long draft pays, with rows as dear as separate passes none does.
    const PassCosts cheap_rows = costs_of(0.02), dear_rows = costs_of(1.0);
    NgramDrafter cheap(o, cheap_rows), dear(o, dear_rows);
    for (int i = 0; i < 40; ++i) {
        cheap.record(2, 5, 4);
        dear.record(2, 5, 4);
    }
    CHECK(cheap.propose(seq, 8, &match).size() >= 6);
    CHECK(dear.propose(seq, 8, &match).empty());
}

void test_replay() {
    const std::vector<double> cost{1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8};
    // An output that copies the prompt: drafts pay, and every step yields its accepted tokens plus one.
    Tokens prompt;
    for (int i = 0; i < 40; ++i) prompt.push_back(100 + (i * 7) % 23);
    const Tokens copy(prompt.begin() + 5, prompt.end());
    const NgramReplay r = replay_ngram_drafts(NgramOptions(), prompt, copy, cost);
    CHECK(r.tokens == static_cast<int>(copy.size()));
    CHECK(r.tokens == r.passes + r.accepted);
    CHECK(r.accepted > 0 && r.accepted <= r.drafted);
    CHECK(r.speedup() > 1.5);
    int passes = 0, rows = 0;
    for (size_t k = 0; k < r.rows.size(); ++k) {
        passes += r.rows[k];
        rows += r.rows[k] * static_cast<int>(k);
    }
    CHECK(passes == r.passes);
    CHECK(rows == r.passes + r.drafted);
    CHECK(r.rows.size() == cost.size() + 1);  // no draft outgrows the curve
    // Nothing ever repeats: standard decoding, one row per token.
    const NgramReplay plain = replay_ngram_drafts(NgramOptions(), Tokens{1, 2, 3}, Tokens{10, 11, 12, 13}, cost);
    CHECK(plain.drafts == 0 && plain.passes == 4 && plain.cost == 4.0 && plain.speedup() == 1.0);
    // A cost curve that does not start at one row, or undercuts it, is refused.
    bool threw = false;
    try {
        replay_ngram_drafts(NgramOptions(), prompt, copy, {1.2, 1.3});
    } catch (const Error &) {
        threw = true;
    }
    CHECK(threw);
    threw = false;
    try {
        replay_ngram_drafts(NgramOptions(), prompt, copy, {1.0, 0.9});
    } catch (const Error &) {
        threw = true;
    }
    CHECK(threw);
}

void test_bad_options() {
    const PassCosts costs;
    NgramOptions o;
    o.max_draft = 0;
    bool threw = false;
    try {
        NgramDrafter d(o, costs);
    } catch (const Error &) {
        threw = true;
    }
    CHECK(threw);
    o = NgramOptions();
    o.min_match = 3;
    o.max_match = 2;
    threw = false;
    try {
        NgramDrafter d(o, costs);
    } catch (const Error &) {
        threw = true;
    }
    CHECK(threw);
}

}  // namespace

int main() {
    test_lookup();
    test_context_picks_the_occurrence();
    test_acceptance_shapes_the_draft();
    test_costs_shape_the_draft();
    test_replay();
    test_bad_options();
    if (g_failures) {
        std::fprintf(stderr, "%d check(s) failed\n", g_failures);
        return 1;
    }
    std::printf("test_ngram_draft: all checks passed\n");
    return 0;
}
