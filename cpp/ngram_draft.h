// Prompt-lookup drafts: the second source of provisional tokens in the layer-parallel scheduler. When the last
// tokens of the sequence occurred before (in the prompt or in what was generated), the tokens that followed an
// occurrence are proposed as the next ones: of several occurrences, the one whose preceding tokens match the
// sequence furthest back. They enter the pipeline at layer 0 together and are verified like tokens emitted early
// by an exit head.
//
// How many to propose is decided per draft from what was measured during this generation: the acceptance rate of
// earlier drafts (per match length, recent drafts weighing more) and the cost of a pass over k rows relative to one
// row on this machine (PassCosts, which the scheduler fills). A draft of k tokens is worth its cost when the tokens it
// is expected to yield per pass beat those of plain decoding; code that copies from the prompt gets long drafts, chat
// gets few or none.
#pragma once

#include <cstdint>
#include <vector>

#include "drafter.h"
#include "options.h"
#include "pass_costs.h"

namespace adadecode {

class NgramDrafter : public Drafter {
public:
    // `costs` prices drafts of every length; it must outlive the drafter.
    NgramDrafter(const NgramOptions &options, const PassCosts &costs);

    // Proposes up to `limit` tokens to follow `seq` (every token so far, provisional ones included): empty when no
    // suffix of seq occurred before or the measured acceptance does not pay for a draft. `match_length` receives
    // the suffix length that matched, for record().
    std::vector<int32_t> propose(const std::vector<int32_t> &seq, int limit, int *match_length) override;

    // What verification made of a draft proposed for `match_length`: `checked` tokens were compared with the final
    // layer (up to and including the first mismatch), `accepted` of them matched.
    void record(int match_length, int checked, int accepted) override;

    // Per-token acceptance for `match_length`, to the power `length` (draft tokens treated as independent, as
    // the draft length choice does).
    double acceptance_of(int match_length, int length) const override;
    double expected_draft() const override { return mean_draft_; }

private:
    std::vector<int32_t> lookup(const std::vector<int32_t> &seq, int limit, int *match_length);
    double acceptance(int match_length) const;
    int best_draft_length(double acceptance, int available) const;

    NgramOptions options_;
    const PassCosts &costs_;
    // Per match length: exponentially decayed counts of checked and accepted draft tokens.
    std::vector<double> checked_, accepted_;
    std::vector<int> declined_;           // drafts not made since the last one, per match length (for probing)
    double mean_draft_ = 0.0;  // exponentially decayed mean of the proposal lengths
};

}  // namespace adadecode
