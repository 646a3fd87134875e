// Verification of provisional tokens against the final layer (docs/design.md §1): greedy keeps a token when it is the
// final layer's argmax; sampling keeps a token y proposed from q with probability min(1, p(y)/q(y)), p being the
// distribution standard sampling draws from, and on a rejection draws the correction from (p - q)+, so the emitted
// tokens follow p exactly. A drafted token is a deterministic proposal: q is one-hot on it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

#include "sampler.h"

namespace adadecode {

struct ProvisionalToken {
    int32_t token;
    const std::vector<float> *q = nullptr;  // the head's distribution it was sampled from; null: q one-hot on token
};

struct Verdict {
    size_t kept = 0;          // leading tokens accepted
    int32_t correction = -1;  // replaces token `kept` after a rejection; -1 when every token was kept

    bool rejected() const { return correction >= 0; }
    size_t checked() const { return kept + (rejected() ? 1 : 0); }
};

// `final_logits(i)`: the n_vocab final-layer logits that token i must match, asked for in order and only for the
// tokens verification reaches (so that whatever prepares them, e.g. a logits processor, runs exactly for those).
// Draws from `sampler`'s RNG only when sampling: one uniform per token whose q exceeds p, one per correction.
Verdict verify(const std::vector<ProvisionalToken> &tokens, const std::function<const float *(size_t)> &final_logits,
               int n_vocab, Sampler &sampler);

}  // namespace adadecode
