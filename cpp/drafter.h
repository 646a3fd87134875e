// A source of drafted tokens for the scheduler: given the sequence so far, propose the tokens expected to follow.
// Drafted tokens enter at layer 0 and are verified at the top like early-exit tokens; each draft's outcome goes back
// to the drafter so that it can learn how much to propose.
#pragma once

#include <cstdint>
#include <vector>

namespace adadecode {

class Drafter {
public:
    virtual ~Drafter() = default;
    // Up to `limit` tokens to follow `seq` (every token so far, provisional ones included); may be empty. `key`
    // receives what record() needs to attribute this draft's outcome.
    virtual std::vector<int32_t> propose(const std::vector<int32_t> &seq, int limit, int *key) = 0;
    // Verification compared `checked` tokens of the draft proposed with `key` against the final layer (up to and
    // including the first mismatch); `accepted` of them matched.
    virtual void record(int key, int checked, int accepted) = 0;
    // The chance that all `length` tokens of the draft proposed with `key` will be accepted: an exit head's token
    // after them is only worth something if they are (ExitContext::upstream_acceptance).
    virtual double acceptance_of(int key, int length) const = 0;
    // Tokens a call of propose() yields on average, empty proposals included: what is expected to ride after a
    // provisional token, and to be thrown away with it (ExitContext::voided_rows).
    virtual double expected_draft() const = 0;
};

}  // namespace adadecode
