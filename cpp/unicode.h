// Unicode support for the tokenizer: UTF-8 decoding/validation, general-category and White_Space flags, NFC.
// The tables come from scripts/gen_unicode_tables.py (Python's unicodedata); nothing here depends on the locale.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace adadecode {

namespace unicode_tables {
struct FlagRun {
    uint32_t first;
    uint16_t value;
};
struct DecompEntry {
    uint32_t cp;
    uint16_t offset;
    uint8_t length;
};
struct CompEntry {
    uint32_t first;
    uint32_t second;
    uint32_t composed;
};
extern const char *const k_unicode_version;      // categories and White_Space
extern const char *const k_nfc_unicode_version;  // NFC data (Hugging Face's normalizer is older, see the generator)
extern const FlagRun k_flag_runs[];
extern const size_t k_flag_runs_size;
extern const FlagRun k_ccc_runs[];
extern const size_t k_ccc_runs_size;
extern const DecompEntry k_decomp[];
extern const size_t k_decomp_size;
extern const uint32_t k_decomp_pool[];
extern const CompEntry k_comp[];
extern const size_t k_comp_size;
}  // namespace unicode_tables

namespace unicode {

// Flag bits; exactly one of the category-group bits is set for every code point (unassigned ones are "other").
enum : uint16_t {
    k_letter = 1,        // \p{L}
    k_number = 2,        // \p{N}
    k_mark = 4,          // \p{M}
    k_punct = 8,         // \p{P}
    k_symbol = 16,       // \p{S}
    k_separator = 32,    // \p{Z}
    k_other = 64,        // \p{C}
    k_whitespace = 128,  // White_Space, i.e. \s of Oniguruma and Rust regex
    k_nfc_inert = 256,   // unchanged by NFC and never combines with a preceding code point
};

const char *version();
uint16_t flags(uint32_t cp);
inline bool is_letter(uint32_t cp) {
    return flags(cp) & k_letter;
}
inline bool is_number(uint32_t cp) {
    return flags(cp) & k_number;
}
inline bool is_whitespace(uint32_t cp) {
    return flags(cp) & k_whitespace;
}
uint8_t combining_class(uint32_t cp);

// Decodes strict UTF-8 (no surrogates, no overlongs, <= U+10FFFF). Throws adadecode::Error naming the byte
// offset of the first invalid sequence. `offsets`, when given, receives the byte offset of every code point plus
// a final entry equal to text.size().
std::vector<uint32_t> decode_utf8(const std::string &text, std::vector<uint32_t> *offsets = nullptr);
// Length of the valid UTF-8 sequence at text[pos], or 0 when the bytes there are not a valid sequence.
size_t utf8_sequence_length(const char *text, size_t size, size_t pos);
void append_utf8(std::string &out, uint32_t cp);
// Replaces every maximal invalid subsequence by U+FFFD (the same substitution as Python's errors="replace"
// and Rust's String::from_utf8_lossy).
std::string sanitize_utf8(const std::string &bytes);
// Number of bytes at the end of `bytes` that form an incomplete (but so far valid) UTF-8 sequence: 0..3.
size_t incomplete_utf8_tail(const std::string &bytes);

// Canonical composition (NFC) of valid UTF-8 text.
std::string nfc(const std::string &utf8);
bool is_nfc_inert(const std::string &utf8);

}  // namespace unicode
}  // namespace adadecode
