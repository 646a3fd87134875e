// Replays the prompt-lookup drafter offline over a recorded greedy output: at every step it proposes a draft from
// the text so far, the recorded output says how much of it verification would accept, and the step is priced with
// a given pass-cost curve. A draft policy can then be judged in seconds, on thousands of recorded tokens, without
// timing noise: the decoder's n-gram mode makes exactly these proposals when its timings give the same curve.
#pragma once

#include <cstdint>
#include <vector>

#include "ngram_draft.h"

namespace adadecode {

struct NgramReplay {
    int tokens = 0;         // tokens of the output replayed
    int passes = 0;         // verification passes: one per step, a draft of k tokens adding k rows
    double cost = 0.0;      // sum of the passes' relative costs: a one-row pass is 1
    int drafts = 0;         // drafts proposed
    int drafted = 0;        // tokens they proposed
    int accepted = 0;       // ... of which verification would accept
    std::vector<int> rows;  // histogram: rows[r] = passes over r rows

    // Tokens per unit of pass cost, relative to standard decoding's one token per one-row pass.
    double speedup() const { return cost > 0.0 ? tokens / cost : 0.0; }
};

// `relative_cost[r - 1]` is the cost of a pass over r rows relative to one row (relative_cost[0] == 1); drafts are
// capped so that their passes stay within the curve, and the drafter prices them as PassCosts would (a curve that
// falls somewhere it sees pooled into one that does not). `output` is what standard greedy decoding produced after
// `prompt`, without the end-of-generation token.
NgramReplay replay_ngram_drafts(const NgramOptions &options, const std::vector<int32_t> &prompt,
                                const std::vector<int32_t> &output, const std::vector<double> &relative_cost);

}  // namespace adadecode
