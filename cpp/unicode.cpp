#include "unicode.h"

#include <algorithm>
#include <array>

#include "error.h"

namespace adadecode {
namespace unicode {

namespace {

using namespace unicode_tables;

constexpr uint32_t k_bmp = 0x10000;

uint16_t lookup_runs(const FlagRun *runs, size_t n, uint32_t cp) {
    // The last run whose first code point is <= cp.
    const FlagRun *it = std::upper_bound(runs, runs + n, cp, [](uint32_t c, const FlagRun &r) { return c < r.first; });
    return it == runs ? 0 : (it - 1)->value;
}

// The BMP is where nearly all text lives; a flat table makes the pre-tokenizer's per-character test one load.
struct BmpTables {
    std::vector<uint16_t> flags;
    std::vector<uint8_t> ccc;
    BmpTables() : flags(k_bmp), ccc(k_bmp) {
        for (uint32_t cp = 0; cp < k_bmp; ++cp) {
            flags[cp] = lookup_runs(k_flag_runs, k_flag_runs_size, cp);
            ccc[cp] = static_cast<uint8_t>(lookup_runs(k_ccc_runs, k_ccc_runs_size, cp));
        }
    }
};

const BmpTables &bmp() {
    static const BmpTables tables;
    return tables;
}

constexpr uint32_t k_s_base = 0xAC00, k_l_base = 0x1100, k_v_base = 0x1161, k_t_base = 0x11A7;
constexpr uint32_t k_l_count = 19, k_v_count = 21, k_t_count = 28;
constexpr uint32_t k_n_count = k_v_count * k_t_count, k_s_count = k_l_count * k_n_count;

void decompose(uint32_t cp, std::vector<uint32_t> &out) {
    if (cp >= k_s_base && cp < k_s_base + k_s_count) {
        const uint32_t s = cp - k_s_base;
        out.push_back(k_l_base + s / k_n_count);
        out.push_back(k_v_base + (s % k_n_count) / k_t_count);
        if (s % k_t_count != 0) {
            out.push_back(k_t_base + s % k_t_count);
        }
        return;
    }
    const DecompEntry *it = std::lower_bound(k_decomp, k_decomp + k_decomp_size, cp,
                                             [](const DecompEntry &e, uint32_t c) { return e.cp < c; });
    if (it != k_decomp + k_decomp_size && it->cp == cp) {
        out.insert(out.end(), k_decomp_pool + it->offset, k_decomp_pool + it->offset + it->length);
    } else {
        out.push_back(cp);
    }
}

// Returns 0 when the pair has no primary composite.
uint32_t compose(uint32_t first, uint32_t second) {
    if (first >= k_l_base && first < k_l_base + k_l_count && second >= k_v_base && second < k_v_base + k_v_count) {
        return k_s_base + ((first - k_l_base) * k_v_count + (second - k_v_base)) * k_t_count;
    }
    if (first >= k_s_base && first < k_s_base + k_s_count && (first - k_s_base) % k_t_count == 0 && second > k_t_base &&
        second < k_t_base + k_t_count) {
        return first + (second - k_t_base);
    }
    const CompEntry *it = std::lower_bound(k_comp, k_comp + k_comp_size, std::make_pair(first, second),
                                           [](const CompEntry &e, const std::pair<uint32_t, uint32_t> &p) {
                                               return e.first < p.first || (e.first == p.first && e.second < p.second);
                                           });
    if (it != k_comp + k_comp_size && it->first == first && it->second == second) {
        return it->composed;
    }
    return 0;
}

}  // namespace

const char *version() {
    return k_unicode_version;
}

uint16_t flags(uint32_t cp) {
    if (cp < k_bmp) {
        return bmp().flags[cp];
    }
    return lookup_runs(k_flag_runs, k_flag_runs_size, cp);
}

uint8_t combining_class(uint32_t cp) {
    if (cp < k_bmp) {
        return bmp().ccc[cp];
    }
    return static_cast<uint8_t>(lookup_runs(k_ccc_runs, k_ccc_runs_size, cp));
}

size_t utf8_sequence_length(const char *text, size_t size, size_t pos) {
    const auto *s = reinterpret_cast<const unsigned char *>(text);
    const unsigned char c = s[pos];
    if (c < 0x80) {
        return 1;
    }
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;  // allowed range of the second byte (excludes overlongs and surrogates)
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (pos + len > size) {
        return 0;
    }
    if (s[pos + 1] < lo || s[pos + 1] > hi) {
        return 0;
    }
    for (size_t k = 2; k < len; ++k) {
        if ((s[pos + k] & 0xC0) != 0x80) {
            return 0;
        }
    }
    return len;
}

std::vector<uint32_t> decode_utf8(const std::string &text, std::vector<uint32_t> *offsets) {
    std::vector<uint32_t> cps;
    cps.reserve(text.size());
    if (offsets) {
        offsets->clear();
        offsets->reserve(text.size() + 1);
    }
    const auto *s = reinterpret_cast<const unsigned char *>(text.data());
    size_t pos = 0;
    while (pos < text.size()) {
        if (offsets) {
            offsets->push_back(static_cast<uint32_t>(pos));
        }
        if (s[pos] < 0x80) {
            cps.push_back(s[pos++]);
            continue;
        }
        const size_t len = utf8_sequence_length(text.data(), text.size(), pos);
        if (len == 0) {
            throw Error("invalid UTF-8 in text at byte offset " + std::to_string(pos));
        }
        uint32_t cp = s[pos] & (0x7F >> len);
        for (size_t k = 1; k < len; ++k) {
            cp = (cp << 6) | (s[pos + k] & 0x3F);
        }
        cps.push_back(cp);
        pos += len;
    }
    if (offsets) {
        offsets->push_back(static_cast<uint32_t>(text.size()));
    }
    return cps;
}

void append_utf8(std::string &out, uint32_t cp) {
    if (cp < 0x80) {
        out.push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
        out.push_back(static_cast<char>(0xC0 | (cp >> 6)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
        out.push_back(static_cast<char>(0xE0 | (cp >> 12)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
        out.push_back(static_cast<char>(0xF0 | (cp >> 18)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
        out.push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
}

namespace {
// Length of the longest prefix of bytes[pos..] that could start a valid sequence (a maximal subpart), >= 1.
size_t maximal_subpart(const std::string &bytes, size_t pos) {
    const auto *s = reinterpret_cast<const unsigned char *>(bytes.data());
    const unsigned char c = s[pos];
    size_t len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 1;
    }
    size_t k = 1;
    while (k < len && pos + k < bytes.size()) {
        const unsigned char b = s[pos + k];
        const bool ok = (k == 1) ? (b >= lo && b <= hi) : ((b & 0xC0) == 0x80);
        if (!ok) {
            break;
        }
        ++k;
    }
    return k;
}
}  // namespace

std::string sanitize_utf8(const std::string &bytes) {
    std::string out;
    out.reserve(bytes.size());
    size_t pos = 0;
    while (pos < bytes.size()) {
        const size_t len = utf8_sequence_length(bytes.data(), bytes.size(), pos);
        if (len > 0) {
            out.append(bytes, pos, len);
            pos += len;
        } else {
            out += "\xEF\xBF\xBD";
            pos += maximal_subpart(bytes, pos);
        }
    }
    return out;
}

size_t incomplete_utf8_tail(const std::string &bytes) {
    // Look back at most 3 bytes for a lead byte whose sequence runs past the end but is valid so far.
    const size_t n = bytes.size();
    for (size_t back = 1; back <= 3 && back <= n; ++back) {
        const size_t pos = n - back;
        const auto c = static_cast<unsigned char>(bytes[pos]);
        if ((c & 0xC0) == 0x80) {
            continue;
        }
        if (c < 0xC2 || c > 0xF4) {
            return 0;
        }
        const size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : 2;
        if (back >= need) {
            return 0;
        }
        return maximal_subpart(bytes, pos) == back ? back : 0;
    }
    return 0;
}

bool is_nfc_inert(const std::string &utf8) {
    const auto *s = reinterpret_cast<const unsigned char *>(utf8.data());
    size_t pos = 0;
    while (pos < utf8.size()) {
        if (s[pos] < 0x80) {
            ++pos;
            continue;
        }
        const size_t len = utf8_sequence_length(utf8.data(), utf8.size(), pos);
        if (len == 0) {
            return false;
        }
        uint32_t cp = s[pos] & (0x7F >> len);
        for (size_t k = 1; k < len; ++k) {
            cp = (cp << 6) | (s[pos + k] & 0x3F);
        }
        if (!(flags(cp) & k_nfc_inert)) {
            return false;
        }
        pos += len;
    }
    return true;
}

std::string nfc(const std::string &utf8) {
    if (is_nfc_inert(utf8)) {
        return utf8;
    }
    const std::vector<uint32_t> cps = decode_utf8(utf8);
    // 1. Full canonical decomposition.
    std::vector<uint32_t> d;
    d.reserve(cps.size() + 8);
    for (uint32_t cp : cps) {
        decompose(cp, d);
    }
    // 2. Canonical ordering: stable sort of every run of non-starters by combining class.
    for (size_t i = 0; i < d.size();) {
        if (combining_class(d[i]) == 0) {
            ++i;
            continue;
        }
        size_t j = i;
        while (j < d.size() && combining_class(d[j]) != 0) {
            ++j;
        }
        std::stable_sort(d.begin() + i, d.begin() + j,
                         [](uint32_t a, uint32_t b) { return combining_class(a) < combining_class(b); });
        i = j;
    }
    // 3. Canonical composition: each character composes with the last starter unless blocked.
    std::vector<uint32_t> out;
    out.reserve(d.size());
    long starter = -1;
    int last_ccc = -1;
    for (uint32_t cp : d) {
        const int ccc = combining_class(cp);
        if (starter >= 0) {
            const bool blocked = !(last_ccc == -1 && out.size() == static_cast<size_t>(starter) + 1) &&
                                 (last_ccc >= ccc || last_ccc == 0);
            if (!blocked) {
                const uint32_t c = compose(out[static_cast<size_t>(starter)], cp);
                if (c != 0) {
                    out[static_cast<size_t>(starter)] = c;
                    continue;
                }
            }
        }
        if (ccc == 0) {
            starter = static_cast<long>(out.size());
            last_ccc = -1;
        } else {
            last_ccc = ccc;
        }
        out.push_back(cp);
    }
    std::string result;
    result.reserve(utf8.size());
    for (uint32_t cp : out) {
        append_utf8(result, cp);
    }
    return result;
}

}  // namespace unicode
}  // namespace adadecode
