#include "pretokenizer.h"

#include "unicode.h"

namespace adadecode {
namespace pretok {

namespace {

using unicode::k_letter;
using unicode::k_number;
using unicode::k_whitespace;

constexpr uint16_t k_lnw = k_letter | k_number | k_whitespace;

// Flags of every code point of the text, computed once: each matcher looks at a character several times.
struct Text {
    const uint32_t *c;
    std::vector<uint16_t> f;
    Text(const uint32_t *cps, size_t n) : c(cps), f(n) {
        for (size_t i = 0; i < n; ++i) {
            f[i] = unicode::flags(cps[i]);
        }
    }
};

// \s+(?!\S) then \s+, at a whitespace character i: the longest whitespace run, minus its last character when a
// non-space follows (that character goes with the next piece), but never less than one character.
size_t match_whitespace(const Text &t, size_t i, size_t end) {
    size_t k = i;
    while (k < end && (t.f[k] & k_whitespace)) {
        ++k;
    }
    if (k == end || k - i < 2) {
        return k;
    }
    return k - 1;
}

// Contractions 's 't 're 've 'm 'll 'd at an apostrophe; returns i when none matches.
size_t match_contraction(const Text &t, size_t i, size_t end, bool ignore_case) {
    if (t.c[i] != '\'' || i + 1 >= end) {
        return i;
    }
    auto fold = [ignore_case](uint32_t c) -> uint32_t {
        if (!ignore_case) {
            return c;
        }
        if (c >= 'A' && c <= 'Z') {
            return c + 32;
        }
        if (c == 0x17F) {  // LATIN SMALL LETTER LONG S case-folds to 's' in Oniguruma's (?i)
            return 's';
        }
        return c;
    };
    const uint32_t a = fold(t.c[i + 1]);
    if (a == 's' || a == 't' || a == 'm' || a == 'd') {
        return i + 2;
    }
    if (i + 2 < end) {
        const uint32_t b = fold(t.c[i + 2]);
        if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) {
            return i + 3;
        }
    }
    return i;
}

size_t match_gpt2(const Text &t, size_t i, size_t end) {
    // 's|'t|'re|'ve|'m|'ll|'d
    size_t m = match_contraction(t, i, end, false);
    if (m != i) {
        return m;
    }
    // ` ?\p{L}+`, ` ?\p{N}+`, ` ?[^\s\p{L}\p{N}]+`: the optional space is a literal U+0020.
    size_t j = (t.c[i] == ' ' && i + 1 < end) ? i + 1 : i;
    const uint16_t fj = t.f[j];
    if (fj & k_letter) {
        while (j < end && (t.f[j] & k_letter)) {
            ++j;
        }
        return j;
    }
    if (fj & k_number) {
        while (j < end && (t.f[j] & k_number)) {
            ++j;
        }
        return j;
    }
    if (!(fj & k_lnw)) {
        while (j < end && !(t.f[j] & k_lnw)) {
            ++j;
        }
        return j;
    }
    // \s+(?!\S)|\s+ (here t.c[i] is whitespace)
    return match_whitespace(t, i, end);
}

size_t match_llama3(const Text &t, size_t i, size_t end, size_t max_digits) {
    // (?i:'s|'t|'re|'ve|'m|'ll|'d)
    size_t m = match_contraction(t, i, end, true);
    if (m != i) {
        return m;
    }
    const uint32_t c = t.c[i];
    const uint16_t f = t.f[i];
    // [^\r\n\p{L}\p{N}]?\p{L}+
    {
        size_t j = i;
        if (!(f & (k_letter | k_number)) && c != '\r' && c != '\n' && i + 1 < end && (t.f[i + 1] & k_letter)) {
            j = i + 1;
        }
        if (t.f[j] & k_letter) {
            while (j < end && (t.f[j] & k_letter)) {
                ++j;
            }
            return j;
        }
    }
    // \p{N}{1,max_digits}
    if (f & k_number) {
        size_t j = i;
        while (j < end && j - i < max_digits && (t.f[j] & k_number)) {
            ++j;
        }
        return j;
    }
    // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
    {
        size_t j = (c == ' ' && i + 1 < end) ? i + 1 : i;
        if (!(t.f[j] & k_lnw)) {
            while (j < end && !(t.f[j] & k_lnw)) {
                ++j;
            }
            while (j < end && (t.c[j] == '\r' || t.c[j] == '\n')) {
                ++j;
            }
            return j;
        }
    }
    // \s*[\r\n]+: within the whitespace run at i, up to and including its last line break.
    size_t k = i;
    size_t last_break = end;
    while (k < end && (t.f[k] & k_whitespace)) {
        if (t.c[k] == '\r' || t.c[k] == '\n') {
            last_break = k;
        }
        ++k;
    }
    if (last_break != end) {
        return last_break + 1;
    }
    // \s+(?!\S)|\s+
    return match_whitespace(t, i, end);
}

}  // namespace

void split(Kind kind, const uint32_t *cps, size_t n, std::vector<uint32_t> &ends) {
    if (n == 0) {
        return;
    }
    const Text t(cps, n);
    auto run = [&](size_t begin, size_t end) {
        size_t i = begin;
        while (i < end) {
            size_t j;
            switch (kind) {
                case Kind::llama3:
                    j = match_llama3(t, i, end, 3);
                    break;
                case Kind::qwen2:
                    j = match_llama3(t, i, end, 1);
                    break;
                default:
                    j = match_gpt2(t, i, end);
                    break;
            }
            ends.push_back(static_cast<uint32_t>(j));
            i = j;
        }
    };
    if (kind != Kind::digits_gpt2) {
        run(0, n);
        return;
    }
    // Digits(individual_digits=true) isolates every \p{N} (Rust's char::is_numeric: Nd, Nl, No); the regex then
    // runs inside each remaining stretch, so its look-ahead never sees past a digit.
    size_t begin = 0;
    for (size_t i = 0; i < n; ++i) {
        if (t.f[i] & k_number) {
            run(begin, i);
            ends.push_back(static_cast<uint32_t>(i + 1));
            begin = i + 1;
        }
    }
    run(begin, n);
}

}  // namespace pretok
}  // namespace adadecode
