#include "vocab.h"

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <queue>

#include "unicode.h"

namespace adadecode {

namespace {

// GPT-2's byte-to-unicode table: printable Latin-1 bytes stand for themselves, the other 68 bytes are moved to
// U+0100.. in byte order, so that every byte has a visible, non-space character in token texts.
struct ByteMap {
    uint32_t byte_to_cp[256];
    std::unordered_map<uint32_t, uint8_t> cp_to_byte;
    ByteMap() {
        uint32_t n = 0;
        for (uint32_t b = 0; b < 256; ++b) {
            const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174);
            byte_to_cp[b] = printable ? b : 256 + n++;
            cp_to_byte[byte_to_cp[b]] = static_cast<uint8_t>(b);
        }
    }
};

const ByteMap &byte_map() {
    static const ByteMap map;
    return map;
}

const char *const k_spm_space = "\xE2\x96\x81";  // U+2581 LOWER ONE EIGHTH BLOCK, sentencepiece's space

// tokenizer.ggml.pre -> our pre-tokenizer and the parts of the family's tokenizer.json that go with it.
struct PreInfo {
    pretok::Kind kind;
    bool nfc;            // tokenizer.json has an NFC normalizer
    bool ignore_merges;  // tokenizer.json's BPE model has ignore_merges = true
};

PreInfo pre_info(const std::string &pre) {
    static const std::vector<std::pair<std::vector<std::string>, PreInfo>> table = {
        {{"llama-bpe", "llama3", "llama-v3", "smaug-bpe", "dbrx"}, {pretok::Kind::llama3, false, true}},
        {{"qwen2", "deepseek-r1-qwen", "megrez"}, {pretok::Kind::qwen2, true, false}},
        {{"smollm", "starcoder", "refact"}, {pretok::Kind::digits_gpt2, false, false}},
        {{"gpt2", "gpt-2", "default", ""}, {pretok::Kind::gpt2, false, false}},
    };
    for (const auto &entry : table) {
        if (std::find(entry.first.begin(), entry.first.end(), pre) != entry.first.end()) {
            return entry.second;
        }
    }
    // An unknown family: GPT-2's ByteLevel pre-tokenizer is what Hugging Face uses when nothing else is said.
    return {pretok::Kind::gpt2, false, false};
}

std::string replace_all(const std::string &s, const std::string &from, const std::string &to) {
    std::string out;
    out.reserve(s.size());
    size_t pos = 0;
    while (true) {
        const size_t hit = s.find(from, pos);
        if (hit == std::string::npos) {
            out.append(s, pos, std::string::npos);
            return out;
        }
        out.append(s, pos, hit - pos);
        out += to;
        pos = hit + from.size();
    }
}

}  // namespace

std::unique_ptr<Vocab> Vocab::from_gguf(const GgufFile &file) {
    std::unique_ptr<Vocab> v(new Vocab());
    const std::string model = file.get_string("tokenizer.ggml.model");
    if (model == "gpt2") {
        v->kind_ = Kind::bpe;
    } else if (model == "llama") {
        v->kind_ = Kind::spm;
    } else {
        throw Error("'" + file.path() + "': tokenizer model '" + model +
                    "' is not supported (supported: 'gpt2' = byte-level BPE, 'llama' = sentencepiece)");
    }
    v->texts_ = file.get_string_array("tokenizer.ggml.tokens");
    const size_t n = v->texts_.size();
    if (n == 0) {
        throw Error("'" + file.path() + "': tokenizer.ggml.tokens is empty");
    }
    if (n > static_cast<size_t>(INT32_MAX)) {
        throw Error("'" + file.path() + "': too many tokens");
    }
    v->types_.assign(n, type_normal);
    if (file.has("tokenizer.ggml.token_type")) {
        const std::vector<int64_t> types = file.get_int_array("tokenizer.ggml.token_type");
        if (types.size() != n) {
            throw Error("'" + file.path() + "': tokenizer.ggml.token_type has " + std::to_string(types.size()) +
                        " entries for " + std::to_string(n) + " tokens");
        }
        for (size_t i = 0; i < n; ++i) {
            v->types_[i] = static_cast<uint8_t>(types[i] >= 0 && types[i] <= 6 ? types[i] : int64_t{type_normal});
        }
    }
    if (file.has("tokenizer.ggml.scores")) {
        v->scores_ = file.get_float_array("tokenizer.ggml.scores");
        if (v->scores_.size() != n) {
            throw Error("'" + file.path() + "': tokenizer.ggml.scores has " + std::to_string(v->scores_.size()) +
                        " entries for " + std::to_string(n) + " tokens");
        }
    }
    v->text_to_id_.reserve(n * 2);
    for (size_t i = 0; i < n; ++i) {
        // The first id wins for duplicate texts, as in the vocabularies these files are converted from.
        v->text_to_id_.emplace(v->texts_[i], static_cast<int32_t>(i));
    }

    auto token_key = [&](const char *key) -> int32_t {
        if (!file.has(key)) {
            return -1;
        }
        const int64_t id = file.get_int(key);
        if (id < 0 || id >= static_cast<int64_t>(n)) {
            return -1;  // some converters write -1 or an out-of-range id for "none"
        }
        return static_cast<int32_t>(id);
    };
    v->bos_ = token_key("tokenizer.ggml.bos_token_id");
    v->eos_ = token_key("tokenizer.ggml.eos_token_id");
    v->unk_ = token_key("tokenizer.ggml.unknown_token_id");
    const bool spm = v->kind_ == Kind::spm;
    v->add_bos_ = file.get_bool("tokenizer.ggml.add_bos_token", spm) && v->bos_ >= 0;
    v->add_eos_ = file.get_bool("tokenizer.ggml.add_eos_token", false) && v->eos_ >= 0;
    v->add_space_prefix_ = file.get_bool("tokenizer.ggml.add_space_prefix", spm);
    v->chat_template_ = file.get_string("tokenizer.chat_template", "");

    if (spm) {
        v->build_spm();
    } else {
        v->build_bpe(file);
    }
    v->build_specials();

    // End of generation: the GGUF's eos/eot/eom ids plus control tokens whose text marks the end of a turn.
    v->eog_.assign(n, 0);
    for (const char *key :
         {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
        const int32_t id = token_key(key);
        if (id >= 0) {
            v->eog_[static_cast<size_t>(id)] = 1;
        }
    }
    static const char *const eog_texts[] = {"<|eot_id|>",      "<|im_end|>",    "<|end|>",
                                            "<end_of_turn>",   "<|endoftext|>", "<EOT>",
                                            "<|end_of_text|>", "<|eom_id|>",    "<｜end▁of▁sentence｜>"};
    for (const char *text : eog_texts) {
        const int32_t id = v->token_id(text);
        if (id >= 0 && (v->types_[static_cast<size_t>(id)] == type_control ||
                        v->types_[static_cast<size_t>(id)] == type_user_defined)) {
            v->eog_[static_cast<size_t>(id)] = 1;
        }
    }
    return v;
}

void Vocab::build_bpe(const GgufFile &file) {
    const PreInfo info = pre_info(file.get_string("tokenizer.ggml.pre", "default"));
    pre_name_ = file.get_string("tokenizer.ggml.pre", "default");
    pre_ = info.kind;
    nfc_ = info.nfc;
    ignore_merges_ = info.ignore_merges;

    const ByteMap &bm = byte_map();
    for (int b = 0; b < 256; ++b) {
        std::string s;
        unicode::append_utf8(s, bm.byte_to_cp[b]);
        byte_token_[b] = token_id(s);
    }

    pieces_.resize(texts_.size());
    for (size_t i = 0; i < texts_.size(); ++i) {
        const std::string &text = texts_[i];
        if (types_[i] == type_control || types_[i] == type_unknown || types_[i] == type_unused) {
            pieces_[i] = text;
            continue;
        }
        // Hugging Face's ByteLevel decoder maps every character back to its byte, and keeps a token's own UTF-8
        // when one of its characters is not in the table.
        std::string bytes;
        bool ok = true;
        try {
            for (uint32_t cp : unicode::decode_utf8(text)) {
                auto it = bm.cp_to_byte.find(cp);
                if (it == bm.cp_to_byte.end()) {
                    ok = false;
                    break;
                }
                bytes.push_back(static_cast<char>(it->second));
            }
        } catch (const Error &) {
            ok = false;
        }
        pieces_[i] = ok ? bytes : text;
    }

    if (!file.has("tokenizer.ggml.merges")) {
        throw Error("'" + file.path() + "': BPE tokenizer without tokenizer.ggml.merges");
    }
    const std::vector<std::string> merges = file.get_string_array("tokenizer.ggml.merges");
    merges_.reserve(merges.size() * 2);
    for (size_t rank = 0; rank < merges.size(); ++rank) {
        const std::string &m = merges[rank];
        // "left right": token texts hold no raw space in byte-level vocabularies, but try every split anyway.
        int32_t left = -1, right = -1, merged = -1;
        for (size_t sp = m.find(' ', 1); sp != std::string::npos; sp = m.find(' ', sp + 1)) {
            const int32_t l = token_id(m.substr(0, sp));
            const int32_t r = token_id(m.substr(sp + 1));
            if (l >= 0 && r >= 0) {
                left = l;
                right = r;
                merged = token_id(m.substr(0, sp) + m.substr(sp + 1));
                break;
            }
        }
        if (left < 0 || merged < 0) {
            continue;  // a merge whose parts or result are not tokens can never apply
        }
        // Later duplicates overwrite earlier ones, as in Hugging Face's merge map.
        merges_[(static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right)] = {
            static_cast<int32_t>(rank), merged};
    }
}

void Vocab::build_spm() {
    pre_name_ = "spm";
    pieces_.resize(texts_.size());
    std::fill(std::begin(byte_fallback_), std::end(byte_fallback_), -1);
    for (size_t i = 0; i < texts_.size(); ++i) {
        const std::string &text = texts_[i];
        if (types_[i] == type_byte) {
            // <0xXX>
            unsigned value = 0;
            if (text.size() == 6 && text.compare(0, 3, "<0x") == 0 && text[5] == '>' &&
                sscanf(text.c_str() + 3, "%2x", &value) == 1) {
                pieces_[i] = std::string(1, static_cast<char>(value));
                byte_fallback_[value] = static_cast<int32_t>(i);
                continue;
            }
        }
        if (types_[i] == type_control || types_[i] == type_unknown || types_[i] == type_unused) {
            pieces_[i] = text;
            continue;
        }
        pieces_[i] = replace_all(text, k_spm_space, " ");
    }
    if (scores_.empty()) {
        scores_.assign(texts_.size(), 0.0f);
    }
}

void Vocab::build_specials() {
    specials_.clear();
    for (size_t i = 0; i < texts_.size(); ++i) {
        const uint8_t t = types_[i];
        if (texts_[i].empty()) {
            continue;
        }
        if (t == type_control || t == type_unknown || t == type_user_defined) {
            specials_.push_back({texts_[i], static_cast<int32_t>(i), t != type_user_defined});
        }
    }
    for (auto &list : specials_by_byte_) {
        list.clear();
    }
    for (uint32_t k = 0; k < specials_.size(); ++k) {
        specials_by_byte_[static_cast<unsigned char>(specials_[k].text[0])].push_back(k);
    }
    for (auto &list : specials_by_byte_) {
        // Longest first, then the lower id, so the first hit at a position is Hugging Face's leftmost-longest match.
        std::sort(list.begin(), list.end(), [this](uint32_t a, uint32_t b) {
            if (specials_[a].text.size() != specials_[b].text.size()) {
                return specials_[a].text.size() > specials_[b].text.size();
            }
            return specials_[a].id < specials_[b].id;
        });
    }
}

void Vocab::check_id(int32_t id) const {
    if (id < 0 || id >= n_tokens()) {
        throw Error("token id " + std::to_string(id) + " is out of range (the vocabulary has " +
                    std::to_string(n_tokens()) + " tokens)");
    }
}

const std::string &Vocab::token_text(int32_t id) const {
    check_id(id);
    return texts_[static_cast<size_t>(id)];
}

Vocab::TokenType Vocab::token_type(int32_t id) const {
    check_id(id);
    return static_cast<TokenType>(types_[static_cast<size_t>(id)]);
}

int32_t Vocab::token_id(const std::string &text) const {
    auto it = text_to_id_.find(text);
    return it == text_to_id_.end() ? -1 : it->second;
}

bool Vocab::is_eog(int32_t id) const {
    if (id < 0 || id >= n_tokens()) {
        return false;
    }
    return eog_[static_cast<size_t>(id)] != 0;
}

std::vector<int32_t> Vocab::tokenize(const std::string &text, bool add_special, bool parse_special) const {
    // Validate first so that the error names the offset in the caller's text, not in a fragment.
    {
        size_t pos = 0;
        const auto *s = reinterpret_cast<const unsigned char *>(text.data());
        while (pos < text.size()) {
            if (s[pos] < 0x80) {
                ++pos;
                continue;
            }
            const size_t len = unicode::utf8_sequence_length(text.data(), text.size(), pos);
            if (len == 0) {
                throw Error("invalid UTF-8 in text at byte offset " + std::to_string(pos));
            }
            pos += len;
        }
    }
    std::vector<int32_t> out;
    out.reserve(text.size() / 3 + 4);
    if (add_special && add_bos_) {
        out.push_back(bos_);
    }
    size_t start = 0;  // start of the text not yet tokenized
    size_t pos = 0;
    if (!specials_.empty()) {
        while (pos < text.size()) {
            const auto &candidates = specials_by_byte_[static_cast<unsigned char>(text[pos])];
            const Special *hit = nullptr;
            for (uint32_t k : candidates) {
                const Special &sp = specials_[k];
                if (sp.control && !parse_special) {
                    continue;
                }
                if (text.size() - pos >= sp.text.size() &&
                    memcmp(text.data() + pos, sp.text.data(), sp.text.size()) == 0) {
                    hit = &sp;
                    break;
                }
            }
            if (!hit) {
                ++pos;
                continue;
            }
            if (pos > start) {
                tokenize_fragment(text.substr(start, pos - start), out);
            }
            out.push_back(hit->id);
            pos += hit->text.size();
            start = pos;
        }
    }
    if (start < text.size()) {
        tokenize_fragment(text.substr(start), out);
    }
    if (add_special && add_eos_) {
        out.push_back(eos_);
    }
    return out;
}

void Vocab::tokenize_fragment(const std::string &text, std::vector<int32_t> &out) const {
    if (kind_ == Kind::spm) {
        spm_fragment(text, out);
        return;
    }
    const std::string normalized = nfc_ ? unicode::nfc(text) : std::string();
    const std::string &t = nfc_ ? normalized : text;
    std::vector<uint32_t> offsets;
    const std::vector<uint32_t> cps = unicode::decode_utf8(t, &offsets);
    std::vector<uint32_t> ends;
    ends.reserve(cps.size() / 3 + 1);
    pretok::split(pre_, cps.data(), cps.size(), ends);
    size_t begin = 0;
    for (uint32_t end : ends) {
        const size_t b0 = offsets[begin], b1 = offsets[end];
        bpe_piece(t.data() + b0, b1 - b0, out);
        begin = end;
    }
}

void Vocab::bpe_piece(const char *bytes, size_t n, std::vector<int32_t> &out) const {
    if (n == 0) {
        return;
    }
    if (n == 1) {
        const int32_t id = byte_token_[static_cast<unsigned char>(bytes[0])];
        if (id >= 0) {
            out.push_back(id);
        }
        return;
    }
    std::string key(bytes, n);
    {
        std::lock_guard<std::mutex> lock(cache_mutex_);
        auto it = cache_.find(key);
        if (it != cache_.end()) {
            out.insert(out.end(), it->second.begin(), it->second.end());
            return;
        }
    }
    std::vector<int32_t> symbols;
    bool done = false;
    if (ignore_merges_) {
        // The whole piece, spelled in byte-level characters, is taken as is when it is a token.
        std::string spelled;
        const ByteMap &bm = byte_map();
        for (size_t i = 0; i < n; ++i) {
            unicode::append_utf8(spelled, bm.byte_to_cp[static_cast<unsigned char>(bytes[i])]);
        }
        const int32_t id = token_id(spelled);
        if (id >= 0) {
            symbols.push_back(id);
            done = true;
        }
    }
    if (!done) {
        symbols.reserve(n);
        for (size_t i = 0; i < n; ++i) {
            const int32_t id = byte_token_[static_cast<unsigned char>(bytes[i])];
            if (id >= 0) {  // a byte with no token is dropped, as Hugging Face's BPE does without an unk token
                symbols.push_back(id);
            }
        }
        bpe_merge(symbols);
    }
    out.insert(out.end(), symbols.begin(), symbols.end());
    if (n <= 256) {
        std::lock_guard<std::mutex> lock(cache_mutex_);
        if (cache_.size() >= 200000) {
            cache_.clear();  // bound the memory a long, varied text can take
        }
        cache_.emplace(std::move(key), symbols);
    }
}

void Vocab::bpe_merge(std::vector<int32_t> &symbols) const {
    const size_t n = symbols.size();
    if (n < 2) {
        return;
    }
    auto find = [this](int32_t a, int32_t b) -> const std::pair<int32_t, int32_t> * {
        auto it = merges_.find((static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b));
        return it == merges_.end() ? nullptr : &it->second;
    };
    if (n <= 24) {
        // Short words: scanning for the lowest-ranked pair beats a heap.
        std::vector<int32_t> &s = symbols;
        while (s.size() > 1) {
            int32_t best_rank = INT32_MAX, best_id = -1;
            size_t best = 0;
            for (size_t i = 0; i + 1 < s.size(); ++i) {
                const auto *m = find(s[i], s[i + 1]);
                if (m && m->first < best_rank) {
                    best_rank = m->first;
                    best_id = m->second;
                    best = i;
                }
            }
            if (best_id < 0) {
                break;
            }
            s[best] = best_id;
            s.erase(s.begin() + static_cast<long>(best) + 1);
        }
        return;
    }
    // Long words: a doubly linked list of symbols and a heap of candidate merges, lowest rank then leftmost first.
    struct Sym {
        int32_t id;
        int32_t prev, next;
    };
    std::vector<Sym> syms(n);
    for (size_t i = 0; i < n; ++i) {
        syms[i] = {symbols[i], static_cast<int32_t>(i) - 1, i + 1 < n ? static_cast<int32_t>(i + 1) : -1};
    }
    struct Cand {
        int32_t rank, pos, left, right, merged;
        bool operator<(const Cand &o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }
    };
    std::priority_queue<Cand> heap;
    auto push = [&](int32_t pos) {
        if (pos < 0 || syms[static_cast<size_t>(pos)].next < 0) {
            return;
        }
        const Sym &a = syms[static_cast<size_t>(pos)];
        const Sym &b = syms[static_cast<size_t>(a.next)];
        if (const auto *m = find(a.id, b.id)) {
            heap.push({m->first, pos, a.id, b.id, m->second});
        }
    };
    for (size_t i = 0; i + 1 < n; ++i) {
        push(static_cast<int32_t>(i));
    }
    while (!heap.empty()) {
        const Cand c = heap.top();
        heap.pop();
        Sym &a = syms[static_cast<size_t>(c.pos)];
        // Stale: the symbol was merged away or changed, or its right neighbour changed (ids only grow).
        if (a.id != c.left || a.next < 0 || syms[static_cast<size_t>(a.next)].id != c.right) {
            continue;
        }
        Sym &b = syms[static_cast<size_t>(a.next)];
        a.id = c.merged;
        a.next = b.next;
        if (b.next >= 0) {
            syms[static_cast<size_t>(b.next)].prev = c.pos;
        }
        b.id = -1;
        push(a.prev);
        push(c.pos);
    }
    symbols.clear();
    for (int32_t i = 0; i >= 0; i = syms[static_cast<size_t>(i)].next) {
        symbols.push_back(syms[static_cast<size_t>(i)].id);
    }
}

void Vocab::spm_fragment(const std::string &text, std::vector<int32_t> &out) const {
    std::string escaped;
    // Every stretch of text between added tokens gets the dummy prefix: that is what the Llama/Mistral
    // tokenizer.json does (a Prepend("▁") normalizer, "legacy" mode) and what llama.cpp does; sentencepiece itself,
    // which knows nothing of added tokens, only prefixes the start of the whole text.
    if (add_space_prefix_) {
        escaped = k_spm_space;
    }
    escaped += replace_all(text, " ", k_spm_space);
    // Symbols are UTF-8 characters; merge the adjacent pair whose concatenation is the best-scoring token.
    struct Sym {
        uint32_t begin, len;
        int32_t prev, next;
    };
    std::vector<Sym> syms;
    for (size_t pos = 0; pos < escaped.size();) {
        const size_t len = unicode::utf8_sequence_length(escaped.data(), escaped.size(), pos);
        const size_t l = len ? len : 1;
        syms.push_back(
            {static_cast<uint32_t>(pos), static_cast<uint32_t>(l), static_cast<int32_t>(syms.size()) - 1, -1});
        if (syms.size() > 1) {
            syms[syms.size() - 2].next = static_cast<int32_t>(syms.size() - 1);
        }
        pos += l;
    }
    struct Cand {
        float score;
        int32_t left, right;
        uint32_t size;
        bool operator<(const Cand &o) const { return score != o.score ? score < o.score : left > o.left; }
    };
    std::priority_queue<Cand> heap;
    auto push = [&](int32_t left) {
        if (left < 0 || syms[static_cast<size_t>(left)].next < 0) {
            return;
        }
        const Sym &a = syms[static_cast<size_t>(left)];
        const Sym &b = syms[static_cast<size_t>(a.next)];
        const int32_t id = token_id(escaped.substr(a.begin, a.len + b.len));
        if (id < 0 || types_[static_cast<size_t>(id)] == type_unused) {
            return;
        }
        heap.push({scores_[static_cast<size_t>(id)], left, a.next, a.len + b.len});
    };
    for (size_t i = 0; i + 1 < syms.size(); ++i) {
        push(static_cast<int32_t>(i));
    }
    while (!heap.empty()) {
        const Cand c = heap.top();
        heap.pop();
        Sym &a = syms[static_cast<size_t>(c.left)];
        if (a.len == 0 || a.next != c.right || a.len + syms[static_cast<size_t>(c.right)].len != c.size) {
            continue;
        }
        Sym &b = syms[static_cast<size_t>(c.right)];
        a.len += b.len;
        a.next = b.next;
        if (b.next >= 0) {
            syms[static_cast<size_t>(b.next)].prev = c.left;
        }
        b.len = 0;
        push(a.prev);
        push(c.left);
    }
    for (int32_t i = syms.empty() ? -1 : 0; i >= 0; i = syms[static_cast<size_t>(i)].next) {
        const Sym &s = syms[static_cast<size_t>(i)];
        const int32_t id = token_id(escaped.substr(s.begin, s.len));
        if (id >= 0 && types_[static_cast<size_t>(id)] != type_unused) {
            out.push_back(id);
            continue;
        }
        // Byte fallback: one <0xXX> token per byte; without it, the unknown token.
        bool all_bytes = true;
        for (uint32_t k = 0; k < s.len; ++k) {
            all_bytes = all_bytes && byte_fallback_[static_cast<unsigned char>(escaped[s.begin + k])] >= 0;
        }
        if (all_bytes) {
            for (uint32_t k = 0; k < s.len; ++k) {
                out.push_back(byte_fallback_[static_cast<unsigned char>(escaped[s.begin + k])]);
            }
        } else if (unk_ >= 0) {
            out.push_back(unk_);
        }
    }
}

std::string Vocab::token_to_piece(int32_t id, bool special) const {
    check_id(id);
    const uint8_t t = types_[static_cast<size_t>(id)];
    if (!special && (t == type_control || t == type_unknown || t == type_unused)) {
        return std::string();
    }
    return pieces_[static_cast<size_t>(id)];
}

std::string Vocab::detokenize(const std::vector<int32_t> &ids, bool special) const {
    std::string out;
    for (int32_t id : ids) {
        out += token_to_piece(id, special);
    }
    // sentencepiece (and Hugging Face's Strip decoder) drop the dummy prefix space at the start of the text.
    if (kind_ == Kind::spm && add_space_prefix_ && !out.empty() && out[0] == ' ') {
        out.erase(0, 1);
    }
    return out;
}

namespace {
// Hugging Face's ByteFallback decoder: a run of byte tokens is its bytes when they are valid UTF-8, otherwise one
// U+FFFD per byte.
std::string resolve_byte_run(const std::string &bytes) {
    if (unicode::sanitize_utf8(bytes) == bytes) {
        return bytes;
    }
    std::string out;
    for (size_t i = 0; i < bytes.size(); ++i) {
        out += "\xEF\xBF\xBD";
    }
    return out;
}
}  // namespace

std::string Vocab::decode_text(const std::vector<int32_t> &ids, bool special) const {
    if (kind_ != Kind::spm) {
        return unicode::sanitize_utf8(detokenize(ids, special));
    }
    std::string out, run;
    for (int32_t id : ids) {
        check_id(id);
        if (types_[static_cast<size_t>(id)] == type_byte) {
            run += pieces_[static_cast<size_t>(id)];
            continue;
        }
        const std::string piece = token_to_piece(id, special);
        if (piece.empty()) {
            continue;  // a hidden token does not end a run: Hugging Face drops it before decoding
        }
        out += resolve_byte_run(run);
        run.clear();
        out += piece;
    }
    out += resolve_byte_run(run);
    if (add_space_prefix_ && !out.empty() && out[0] == ' ') {
        out.erase(0, 1);
    }
    return unicode::sanitize_utf8(out);
}

StreamDecoder::StreamDecoder(const Vocab &vocab, bool special) : vocab_(vocab), special_(special) {}

std::string StreamDecoder::emit(std::string text) {
    // The same dummy-prefix rule as Vocab::detokenize, applied to the first visible text.
    if (first_ && !text.empty()) {
        first_ = false;
        if (vocab_.kind() == Vocab::Kind::spm && vocab_.add_space_prefix() && text[0] == ' ') {
            text.erase(0, 1);
        }
    }
    return text;
}

std::string StreamDecoder::push(int32_t id) {
    if (vocab_.kind() == Vocab::Kind::spm) {
        // Byte-fallback tokens are held until the run ends, because Hugging Face decides on the whole run.
        if (vocab_.token_type(id) == Vocab::type_byte) {
            pending_ += vocab_.token_to_piece(id, true);
            return std::string();
        }
        const std::string piece = vocab_.token_to_piece(id, special_);
        if (piece.empty()) {
            return std::string();
        }
        std::string text = resolve_byte_run(pending_) + piece;
        pending_.clear();
        return emit(unicode::sanitize_utf8(text));
    }
    const std::string piece = vocab_.token_to_piece(id, special_);
    if (piece.empty()) {
        return std::string();
    }
    pending_ += piece;
    const size_t hold = unicode::incomplete_utf8_tail(pending_);
    std::string ready = unicode::sanitize_utf8(pending_.substr(0, pending_.size() - hold));
    pending_.erase(0, pending_.size() - hold);
    return emit(std::move(ready));
}

std::string StreamDecoder::flush() {
    std::string out = vocab_.kind() == Vocab::Kind::spm ? resolve_byte_run(pending_) : pending_;
    pending_.clear();
    return emit(unicode::sanitize_utf8(out));
}

}  // namespace adadecode
