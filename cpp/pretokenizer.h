// Pre-tokenizers: split text into the pieces BPE works on, exactly as the Hugging Face pre-tokenizer of each
// model family does. The regexes are hand-written matchers (std::regex is slow and knows no Unicode categories);
// each matcher's comment gives the pattern it implements, alternative by alternative.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace adadecode {
namespace pretok {

enum class Kind {
    // ByteLevel(use_regex=true): 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
    gpt2,
    // Llama 3: (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|
    //          \s*[\r\n]+|\s+(?!\S)|\s+
    llama3,
    // Qwen2: the Llama 3 pattern with \p{N} (single digits) instead of \p{N}{1,3}
    qwen2,
    // StarCoder / SmolLM: Digits(individual_digits=true) then the gpt2 pattern inside each piece
    digits_gpt2,
};

// Appends to `ends` the end index (exclusive, in code points) of every piece of cps[0..n).
void split(Kind kind, const uint32_t *cps, size_t n, std::vector<uint32_t> &ends);

}  // namespace pretok
}  // namespace adadecode
