// Which exit layers may emit early tokens, decided from what verification made of their earlier ones.
//
// Costs are shares of a one-row pass over every layer with logits, by the weights read: below exit layer e lies
// lower(e) = e/L * (1 - o), where o is the output matrix's share (on the 1.5B about a fifth, on the 0.5B over a
// third). An early token at e that verification accepts lets its successor start sooner, and everything above e,
// the logits included, rides along in the successor's pass, where a row costs m extra. Against a token that climbs
// to the top, that saves (1 - lower(e)) * (1 - m). But a token an early head is sure of, the next open exit layer
// e' above is almost always sure of too, so an exit at e only gains what e' would not: (lower(e') - lower(e)) *
// (1 - m) (measured on the 1.5B's chat prompts: layer 7 beside layer 21 cost 5 %; priced against the top it looked
// worth its checks). An early token that is rejected wastes lower(e) + m * (1 - lower(e)): the successor's pass is
// thrown away. So a layer pays while its acceptance p satisfies p * gain > (1 - p) * loss. The check itself costs c
// whatever its outcome, and only a fraction x of checks is confident enough to exit, so the bar is
// x * (p * gain - (1 - p) * loss) > c. A layer below it sits out, but is tried again every `probe_every` checks it
// skipped, so that it can come back when the text gets easier.
//
// x is estimated over about the last 30 checks with a prior worth one check at 1/2: a head that exits on 5 % of
// chat tokens must be seen as such within a few dozen tokens, or its checks (3 % of a pass each on the 1.5B) eat
// what its exits save.
//
// Alongside prompt-lookup drafts (docs/design.md §1, "Exits and drafts") two more terms enter. An exit on the last
// row of a draft in flight only pays if every provisional row before it is accepted too: the gain is weighed with
// the chance u that they all are (a rejection before it voids the exit). And the drafter goes on proposing after
// the exit's token: a rejected exit voids those v drafted rows, each m of a pass, so the loss grows by v * m. The
// bar becomes u * p > (loss + v m + c / x) / (gain + loss + v m).
//
// The same bar, without c / x (the check is paid by then), decides each confident check: does this token exit? Its p
// is the head's agreement with the final layer at that confidence, measured on every greedy check whose successor
// became known, not only on the tokens that exited: a head's confidence is not its precision, and how far off it is
// depends on the layer and on the text (the 1.5B's layer 14 on HumanEval: 0.90 of its tokens at confidence >= 0.75
// agreed, but 0.79 of those that layer 7 had not already taken). Early tokens still waiting for verification count
// in u too: a later exit on top of them is void if any of them is rejected.
#pragma once

#include <cstddef>
#include <vector>

namespace adadecode {

// What an exit would ride on and what its rejection would void (see above); the defaults: nothing in flight.
struct ExitContext {
    double upstream_acceptance = 1.0;  // u: chance that every provisional row before x is accepted
    double voided_rows = 0.0;          // v: drafted rows expected to ride after the exit's token
};

// The terms of the bar above besides the two shares.
struct ExitTerms {
    double marginal_row_cost = 0.0;  // m
    double check_cost = 0.0;         // c
    double exit_rate = 1.0;          // x
    double voided_rows = 0.0;        // v
};

class ExitPolicy {
public:
    // output_share: o above (0: unknown, layers alone). check_cost: c above.
    ExitPolicy(const std::vector<int> &exit_layers, int n_layer, double output_share = 0.0, double check_cost = 0.0);

    // May the head at exit slot `slot` emit now? `marginal_row_cost` is m above. A "no" counts as a skipped check.
    bool allow(size_t slot, double marginal_row_cost, const ExitContext &context = ExitContext{});

    // Does the confident check at `slot` emit its token? u * agreement(slot, confidence) against the bar without the
    // check's cost.
    bool exit_pays(size_t slot, double confidence, double marginal_row_cost, const ExitContext &context) const;

    // Verification checked an early token from `slot`.
    void record(size_t slot, bool accepted);

    // A greedy check at `slot` with this confidence predicted the final layer's token (or did not).
    void record_agreement(size_t slot, double confidence, bool agreed);

    // Estimated chance that the head at `slot`, this confident, names the final layer's token: measured agreement in
    // the confidence's bin, with a prior of kPriorAgreement checks at the confidence itself.
    double agreement(size_t slot, double confidence) const;

    // The head at `slot` was checked, and was (or was not) confident enough to emit.
    void record_check(size_t slot, bool exited);

    // Estimated acceptance of `slot`'s early tokens (recent ones weigh more; optimistic before any evidence).
    double acceptance(size_t slot) const;

    // Share of `slot`'s checks that emitted a token (recent ones weigh more; 1/2 before any evidence).
    double exit_rate(size_t slot) const;

    // The exit layer whose exits one at `slot` would pre-empt: the next layer above that is open (its last decision,
    // probes aside, was yes), or n_layer.
    int later_exit(size_t slot) const;

    // lower(layer) above; 1 at the top, where a token's successor waits for the logits too.
    double share_below(int layer) const;

    // The acceptance a layer needs, from lower(e) and lower(e'): without check cost (or when every check exits),
    // p * gain = (1 - p) * loss. Above 1 when the checks cost more than its exits could ever save.
    static double break_even(double lower, double later_lower, const ExitTerms &terms);

private:
    std::vector<int> layers_;
    int n_layer_;
    double output_share_;
    double check_cost_;
    std::vector<double> checked_, accepted_;  // exponentially decayed counts
    std::vector<double> checks_, exits_;
    std::vector<std::vector<double>> bin_checks_, bin_agreed_;  // per slot and confidence bin, decayed counts
    std::vector<int> skipped_;
    std::vector<char> open_;
};

}  // namespace adadecode
