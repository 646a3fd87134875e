// Decoding: prefill, then either standard decoding or layer-parallel decoding (AdaDecode). Both run through the
// same scheduler; standard decoding is the case with no active exit layers.
#pragma once

#include <cstdint>
#include <vector>

#include "options.h"
#include "pass_runner.h"

namespace adadecode {

// Runs `tokens` through every layer into the KV cache from position `pos0`, `n_batch` rows per pass; `last`
// receives the last pass's result (with `logits` as asked).
void prefill(PassRunner &runner, const int32_t *tokens, int n, int pos0, int n_batch, PassRequest::Logits logits,
             PassResult *last);

class Decoder {
public:
    // `heads` may be null (then only standard decoding and prompt-lookup drafts are possible).
    Decoder(PassRunner &runner, const HeadSet *heads);

    DecodeResult generate(const std::vector<int32_t> &prompt, const DecodeOptions &options,
                          const EndOfGeneration &is_eog, const TokenCallback &on_token);

private:
    PassRunner &runner_;
    const HeadSet *heads_;
};

}  // namespace adadecode
