// Decoding: prefill, then either standard decoding or layer-parallel decoding (AdaDecode). Both run through the
// same scheduler; standard decoding is the case with no active exit layers.
#pragma once

#include <cstdint>
#include <vector>

#include "drafter.h"
#include "options.h"
#include "pass_runner.h"

namespace adadecode {

// Runs `tokens` through every layer into the KV cache from position `pos0`, `n_batch` rows per pass; `last`
// receives the last pass's result (with `logits` as asked).
void prefill(PassRunner &runner, const int32_t *tokens, int n, int pos0, int n_batch, PassRequest::Logits logits,
             PassResult *last);

class Decoder {
public:
    // `heads` may be null (then only standard decoding and prompt-lookup drafts are possible). `drafter`, when
    // given, proposes the drafts that options.ngram asks for in place of prompt lookup (a test's scripted drafts).
    Decoder(PassRunner &runner, const HeadSet *heads, Drafter *drafter = nullptr);

    // The first `n_cached` positions of the KV cache must hold prompt[0, n_cached) in every layer (Engine tracks
    // which do); only the rest of the prompt is prefilled. n_cached < prompt.size(): the last prompt token always
    // runs, for its logits.
    DecodeResult generate(const std::vector<int32_t> &prompt, const DecodeOptions &options,
                          const EndOfGeneration &is_eog, const TokenCallback &on_token, int n_cached = 0);

private:
    PassRunner &runner_;
    const HeadSet *heads_;
    Drafter *drafter_;
};

}  // namespace adadecode
