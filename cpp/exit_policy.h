// Which exit layers may emit early tokens, decided from what verification made of their earlier ones.
//
// An early token at exit layer e (of L layers) that verification accepts saves about (L - e)/L * (1 - m) of a
// token's compute: its upper layers ride along in the next token's pass, where a row costs m of a one-row pass
// extra. One that is rejected wastes about (e + m (L - e))/L: the successor's pass is thrown away. So a layer
// pays while its acceptance p satisfies p * gain > (1 - p) * loss: late exits (small gain) need a high p, early
// ones less. The check itself costs c of a token whatever its outcome, and only a fraction x of checks is confident
// enough to exit, so the bar is x * (p * gain - (1 - p) * loss) > c. A layer below it sits out, but is tried again
// every `probe_every` checks it skipped, so that it can come back when the text gets easier.
//
// Alongside prompt-lookup drafts (docs/design.md §1, "Exits and drafts") two more terms enter. An exit on the last
// row of a draft in flight only pays if every provisional row before it is accepted too: the gain is weighed with
// the chance u that they all are (a rejection before it voids the exit). And the drafter goes on proposing after
// the exit's token: a rejected exit voids those v drafted rows, each m of a pass over every layer, so the loss
// grows by v * m. The bar becomes u * p > (loss + v m + c / x) / (gain + loss + v m).
#pragma once

#include <cstddef>
#include <vector>

namespace adadecode {

// What an exit would ride on and what its rejection would void (see above); the defaults: nothing in flight.
struct ExitContext {
    double upstream_acceptance = 1.0;  // u: chance that every provisional row before x is accepted
    double voided_rows = 0.0;          // v: drafted rows expected to ride after the exit's token
};

class ExitPolicy {
public:
    // check_cost: c above, one head check relative to a one-row pass over every layer.
    ExitPolicy(const std::vector<int> &exit_layers, int n_layer, double check_cost = 0.0);

    // May the head at exit slot `slot` emit now? `marginal_row_cost` is m above. A "no" counts as a skipped check.
    bool allow(size_t slot, double marginal_row_cost, const ExitContext &context = ExitContext{});

    // Verification checked an early token from `slot`.
    void record(size_t slot, bool accepted);

    // The head at `slot` was checked, and was (or was not) confident enough to emit.
    void record_check(size_t slot, bool exited);

    // Estimated acceptance of `slot`'s early tokens (recent ones weigh more; optimistic before any evidence).
    double acceptance(size_t slot) const;

    // Share of `slot`'s checks that emitted a token (recent ones weigh more; 1/2 before any evidence).
    double exit_rate(size_t slot) const;

    // The acceptance a layer needs: without check cost (or when every check exits), p * gain = (1 - p) * loss;
    // `voided_rows` adds their cost to the loss.
    static double break_even(int exit_layer, int n_layer, double marginal_row_cost, double check_cost = 0.0,
                             double exit_rate = 1.0, double voided_rows = 0.0);

private:
    std::vector<int> layers_;
    int n_layer_;
    double check_cost_;
    std::vector<double> checked_, accepted_;  // exponentially decayed counts
    std::vector<double> checks_, exits_;
    std::vector<int> skipped_;
};

}  // namespace adadecode
