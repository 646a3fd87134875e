// Tokenizer tests without Python: Unicode helpers, the pre-tokenizers (expected pieces taken from Hugging Face
// tokenizers 0.23), and, when the models are in $ADADECODE_CACHE/models, ids checked against Hugging Face.
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "pretokenizer.h"
#include "unicode.h"
#include "vocab.h"

#include "check.h"

using namespace adadecode;

namespace {

template <typename T>
std::string join(const std::vector<T> &v) {
    std::string s = "[";
    for (size_t i = 0; i < v.size(); ++i) {
        s += (i ? ", " : "") + std::to_string(v[i]);
    }
    return s + "]";
}

void check_ids(const Vocab &v, const std::string &text, const std::vector<int32_t> &expected) {
    const std::vector<int32_t> got = v.tokenize(text, false, true);
    if (got != expected) {
        std::fprintf(stderr, "tokenize(\"%s\"): got %s, expected %s\n", text.c_str(), join(got).c_str(),
                     join(expected).c_str());
        ++g_failures;
    }
    const std::string back = v.detokenize(got, true);
    if (back != text) {
        std::fprintf(stderr, "round trip of \"%s\" gave \"%s\"\n", text.c_str(), back.c_str());
        ++g_failures;
    }
}

std::vector<std::string> pieces(pretok::Kind kind, const std::string &text) {
    std::vector<uint32_t> offsets;
    const std::vector<uint32_t> cps = unicode::decode_utf8(text, &offsets);
    std::vector<uint32_t> ends;
    pretok::split(kind, cps.data(), cps.size(), ends);
    std::vector<std::string> out;
    size_t begin = 0;
    for (uint32_t end : ends) {
        out.push_back(text.substr(offsets[begin], offsets[end] - offsets[begin]));
        begin = end;
    }
    return out;
}

void test_unicode() {
    CHECK(unicode::is_letter('a') && unicode::is_letter(0x65E5) && !unicode::is_letter('1'));
    CHECK(unicode::is_number('7') && unicode::is_number(0x00B2) && unicode::is_number(0x2160));
    CHECK(unicode::is_whitespace(0x00A0) && unicode::is_whitespace(0x3000) && unicode::is_whitespace(0x85));
    CHECK(!unicode::is_whitespace(0x1C) && !unicode::is_whitespace(0x200B));  // Python's isspace() says yes to 0x1C
    CHECK(unicode::is_letter(0x1E5D0));  // new in Unicode 16.0, a letter for Hugging Face's Oniguruma
    try {
        unicode::decode_utf8("ab\xC3(");
        CHECK(false);
    } catch (const Error &e) {
        CHECK(std::string(e.what()).find("byte offset 2") != std::string::npos);
    }
    CHECK(unicode::sanitize_utf8("a\xF0\x9F\x98"
                                 "b\xFF") ==
          "a\xEF\xBF\xBD"
          "b\xEF\xBF\xBD");
    CHECK(unicode::incomplete_utf8_tail("a\xF0\x9F\x98") == 3);
    CHECK(unicode::incomplete_utf8_tail("a\xC3") == 1);
    CHECK(unicode::incomplete_utf8_tail("a\xC3\xA9") == 0);
    CHECK(unicode::incomplete_utf8_tail("a\xE0\x80") == 0);  // can never become valid: not held back
    CHECK(unicode::nfc("e\xCC\x81") == "\xC3\xA9");          // e + combining acute -> é
    CHECK(unicode::nfc("\xE1\x84\x80\xE1\x85\xA1\xE1\x86\xA8") == "\xEA\xB0\x81");  // Hangul jamo -> 각
    CHECK(unicode::nfc("a\xCC\xA3\xCC\x82") == unicode::nfc("a\xCC\x82\xCC\xA3"));  // canonical ordering
    CHECK(unicode::nfc("\xE2\x84\xAB") == "\xC3\x85");                              // ANGSTROM SIGN -> Å
}

void test_pretokenizers() {
    const std::string s = "I'M fine,  12345 ok!!\r\n\r\n  x\xC2\xA0\xE3\x80\x80y";
    using V = std::vector<std::string>;
    CHECK(pieces(pretok::Kind::gpt2, s) == V({"I", "'", "M", " fine", ",", " ", " 12345", " ok", "!!", "\r\n\r\n ",
                                              " x", "\xC2\xA0", "\xE3\x80\x80", "y"}));
    CHECK(pieces(pretok::Kind::llama3, s) == V({"I", "'M", " fine", ",", " ", " ", "123", "45", " ok", "!!\r\n\r\n",
                                                " ", " x", "\xC2\xA0", "\xE3\x80\x80y"}));
    CHECK(pieces(pretok::Kind::qwen2, s) == V({"I", "'M", " fine", ",", " ", " ", "1", "2", "3", "4", "5", " ok",
                                               "!!\r\n\r\n", " ", " x", "\xC2\xA0", "\xE3\x80\x80y"}));
    CHECK(pieces(pretok::Kind::digits_gpt2, s) == V({"I", "'", "M", " fine", ",", "  ", "1", "2", "3", "4", "5", " ok",
                                                     "!!", "\r\n\r\n ", " x", "\xC2\xA0", "\xE3\x80\x80", "y"}));
    CHECK(pieces(pretok::Kind::qwen2, "").empty());
}

std::string cache_dir() {
    const char *env = std::getenv("ADADECODE_CACHE");
    if (env && *env) {
        return env;
    }
    const char *home = std::getenv("HOME");
    return std::string(home ? home : ".") + "/.cache/adadecode";
}

bool exists(const std::string &path) {
    FILE *f = std::fopen(path.c_str(), "rb");
    if (f) {
        std::fclose(f);
    }
    return f != nullptr;
}

void test_stream(const Vocab &v, const std::string &text) {
    const std::vector<int32_t> ids = v.tokenize(text, false, true);
    StreamDecoder dec(v, true);
    std::string out;
    for (int32_t id : ids) {
        const std::string piece = dec.push(id);
        CHECK(unicode::sanitize_utf8(piece) == piece);  // never a broken character
        out += piece;
    }
    out += dec.flush();
    CHECK(out == text);
}

// Random input must never crash: arbitrary bytes either tokenize or throw Error; random code points round-trip
// (apart from bytes the vocabulary has no token for: SmolLM2 lacks some C0 controls and 0xF1/0xF2, the lead bytes
// of planes 4-11, so max_cp keeps below those); random ids stream to what decode_text gives.
void test_random(const Vocab &v, bool nfc, uint32_t max_cp) {
    uint64_t state = 88172645463325252ull;
    auto next = [&state]() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        return state;
    };
    for (int iter = 0; iter < 2000; ++iter) {
        std::string bytes;
        const size_t n = next() % 24;
        for (size_t i = 0; i < n; ++i) {
            bytes.push_back(static_cast<char>(next() % 256));
        }
        try {
            v.tokenize(bytes, true, true);
        } catch (const Error &) {
        }
        std::string text;
        for (size_t i = 0; i < n; ++i) {
            const uint64_t r = next();
            uint32_t cp = r % 4 == 0   ? static_cast<uint32_t>(0x20 + r % 0x60)
                          : r % 4 == 1 ? static_cast<uint32_t>(r % 0x3000)
                                       : static_cast<uint32_t>(r % max_cp);
            if ((cp >= 0xD800 && cp <= 0xDFFF) || cp < 0x20) {
                cp = ' ';
            }
            unicode::append_utf8(text, cp);
        }
        const std::vector<int32_t> ids = v.tokenize(text, false, false);
        const std::string back = v.detokenize(ids, true);
        if (back != (nfc ? unicode::nfc(text) : text)) {
            std::fprintf(stderr, "random round trip failed (%zu bytes in, %zu out)\n", text.size(), back.size());
            ++g_failures;
            return;
        }
        std::vector<int32_t> random_ids;
        for (size_t i = 0; i < n; ++i) {
            random_ids.push_back(static_cast<int32_t>(next() % static_cast<uint64_t>(v.n_tokens())));
        }
        StreamDecoder dec(v, iter % 2 == 0);
        std::string streamed;
        for (int32_t id : random_ids) {
            streamed += dec.push(id);
        }
        streamed += dec.flush();
        CHECK(streamed == v.decode_text(random_ids, iter % 2 == 0));
    }
}

void test_smollm2(const std::string &path) {
    GgufFile file(path);
    const auto v = Vocab::from_gguf(file);
    CHECK(v->n_tokens() == 49152);
    CHECK(v->bos() == 1 && v->eos() == 2);
    CHECK(v->is_eog(2) && v->is_eog(0) && !v->is_eog(1) && !v->is_eog(100));
    CHECK(!v->add_bos() && !v->chat_template().empty());
    check_ids(*v, "Hello world 12345 <|im_end|> it'S", {19556, 905, 216, 33, 34, 35, 36, 37, 216, 2, 357, 23, 67});
    check_ids(*v, "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E \xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x92\xBB  \n\n\tx = 3.14;",
              {23274, 115, 40993, 179, 120, 248, 15107, 235, 119, 321, 231, 10813, 236,
               136,   256, 1116,  197, 104, 446, 216,   35,  30,  33,  36,  43});
    // Without parse_special the control token's text is ordinary text.
    CHECK(v->tokenize("<|im_end|>", false, false).size() > 1);
    CHECK(v->token_to_piece(2, false).empty() && v->token_to_piece(2, true) == "<|im_end|>");
    CHECK(v->detokenize(v->tokenize("a<|im_end|>b", false, true), false) == "ab");
    try {
        v->tokenize("abc\xFFxyz", true, true);
        CHECK(false);
    } catch (const Error &e) {
        CHECK(std::string(e.what()).find("byte offset 3") != std::string::npos);
    }
    try {
        v->token_to_piece(49152, true);
        CHECK(false);
    } catch (const Error &) {
    }
    test_stream(*v, "na\xC3\xAFve \xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x92\xBB \xE6\x97\xA5\xE6\x9C\xAC <|im_end|>");
    // A long word exercises the heap-based merge path.
    std::string long_word(3000, 'a');
    CHECK(v->detokenize(v->tokenize(long_word, false, false), false) == long_word);
    test_random(*v, false, 0x40000);
}

void test_qwen2(const std::string &path) {
    GgufFile file(path);
    const auto v = Vocab::from_gguf(file);
    CHECK(v->n_tokens() == 151936);
    CHECK(v->is_eog(151645) && v->is_eog(151643));
    check_ids(*v, "Hello world 12345 <|im_end|> it'S", {9707, 1879, 220, 16, 17, 18, 19, 20, 220, 151645, 432, 13272});
    // NFC: "Cafe" + combining acute tokenizes like the composed form.
    CHECK(v->tokenize("Cafe\xCC\x81 caf\xC3\xA9", false, true) == std::vector<int32_t>({34, 2577, 963, 51950}));
    // </s> is an ordinary BPE token in Qwen2.5 and stays text (Hugging Face; llama.cpp splits it out).
    for (int32_t id : v->tokenize("</s>", false, true)) {
        CHECK(v->token_type(id) == Vocab::type_normal);
    }
    test_stream(*v, "\xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E def f(x):\n    return x**2  # \xF0\x9F\x98\x80");
    test_random(*v, true, 0x110000);
}

}  // namespace

int main() {
    try {
        test_unicode();
        test_pretokenizers();
        const std::string models = cache_dir() + "/models/";
        if (exists(models + "smollm2-135m.gguf")) {
            test_smollm2(models + "smollm2-135m.gguf");
        } else {
            std::printf("skipping SmolLM2 checks: %ssmollm2-135m.gguf not found\n", models.c_str());
        }
        if (exists(models + "qwen2.5-coder-0.5b.gguf")) {
            test_qwen2(models + "qwen2.5-coder-0.5b.gguf");
        } else {
            std::printf("skipping Qwen2.5 checks: %sqwen2.5-coder-0.5b.gguf not found\n", models.c_str());
        }
    } catch (const std::exception &e) {
        std::fprintf(stderr, "unexpected exception: %s\n", e.what());
        return 1;
    }
    if (g_failures) {
        std::fprintf(stderr, "%d check(s) failed\n", g_failures);
        return 1;
    }
    std::printf("test_vocab: all checks passed\n");
    return 0;
}
