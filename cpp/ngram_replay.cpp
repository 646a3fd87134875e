#include "ngram_replay.h"

#include <algorithm>

#include "error.h"

namespace adadecode {

NgramReplay replay_ngram_drafts(const NgramOptions &options, const std::vector<int32_t> &prompt,
                                const std::vector<int32_t> &output, const std::vector<double> &relative_cost) {
    if (prompt.empty())
        throw Error("replay: the prompt is empty");
    if (relative_cost.empty() || relative_cost[0] != 1.0) {
        throw Error("replay: relative_cost must start with 1.0, the cost of a one-row pass");
    }
    for (double c : relative_cost) {
        // A pass over more rows never costs less than one row; the drafter's own estimate is clamped the same way.
        if (!(c >= 1.0 && c < 1e9))
            throw Error("replay: every relative_cost must be a finite number >= 1.0");
    }
    // The drafter sees the curve as whole passes timed in units of one row, each as often as counts.
    PassCosts costs;
    for (size_t r = 0; r < relative_cost.size(); ++r) {
        for (size_t i = 0; i < PassCosts::window; ++i)
            costs.record(PassShape{0, 1, true, false}, 1.0, static_cast<int>(r) + 1, relative_cost[r]);
    }
    NgramDrafter drafter(options, costs);

    NgramReplay replay;
    replay.rows.assign(relative_cost.size() + 1, 0);
    const int max_rows = static_cast<int>(relative_cost.size());
    std::vector<int32_t> seq = prompt;
    seq.reserve(prompt.size() + output.size());
    size_t done = 0;
    while (done < output.size()) {
        // As in the decoder: a draft never reaches past the tokens still to generate, nor past the curve.
        const int limit = std::min(static_cast<int>(output.size() - done) - 1, max_rows - 1);
        int match_length = 0;
        const std::vector<int32_t> draft = drafter.propose(seq, limit, &match_length);
        size_t accepted = 0;
        while (accepted < draft.size() && draft[accepted] == output[done + accepted]) ++accepted;
        if (!draft.empty()) {
            // Verification checks up to and including the first mismatch.
            drafter.record(match_length, static_cast<int>(std::min(accepted + 1, draft.size())),
                           static_cast<int>(accepted));
            ++replay.drafts;
            replay.drafted += static_cast<int>(draft.size());
            replay.accepted += static_cast<int>(accepted);
        }
        const int rows = static_cast<int>(draft.size()) + 1;
        ++replay.passes;
        ++replay.rows[rows];
        replay.cost += relative_cost[rows - 1];
        // The accepted draft, then the final layer's own token (the correction, or the one after a full draft).
        const size_t step = accepted + 1;
        seq.insert(seq.end(), output.begin() + done, output.begin() + done + step);
        done += step;
    }
    replay.tokens = static_cast<int>(output.size());
    return replay;
}

}  // namespace adadecode
