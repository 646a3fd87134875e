// The model's tokenizer, built from GGUF metadata alone so the standalone binary needs no Python, and meant to
// give byte-for-byte the ids Hugging Face `tokenizers` gives with the model family's real tokenizer.json.
//
//   BPE (tokenizer.ggml.model = "gpt2"): special/added tokens are split out first, the text between them is
//   normalized (NFC for the families whose tokenizer.json has that normalizer), split by the family's
//   pre-tokenizer (tokenizer.ggml.pre), mapped byte-to-unicode and merged by rank.
//   SPM (tokenizer.ggml.model = "llama"): spaces become U+2581, an optional dummy prefix, merges by score, and
//   byte fallback <0xXX> for characters not in the vocabulary.
// See docs/tokenizer.md for the reference each family was checked against.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "gguf_file.h"
#include "pretokenizer.h"

namespace adadecode {

class Vocab {
public:
    enum class Kind { bpe, spm };
    // The pre-tokenizer families we implement; tokenizer.ggml.pre names map onto these (see vocab.cpp).
    using PreTokenizer = pretok::Kind;
    // GGUF token types (tokenizer.ggml.token_type).
    enum TokenType : uint8_t {
        type_undefined = 0,
        type_normal = 1,
        type_unknown = 2,
        type_control = 3,
        type_user_defined = 4,
        type_unused = 5,
        type_byte = 6,
    };

    static std::unique_ptr<Vocab> from_gguf(const GgufFile &file);

    int32_t n_tokens() const { return static_cast<int32_t>(texts_.size()); }
    Kind kind() const { return kind_; }
    PreTokenizer pre_tokenizer() const { return pre_; }
    const std::string &pre_name() const { return pre_name_; }

    // Invalid UTF-8 -> Error naming the byte offset. add_special adds BOS/EOS as the GGUF flags say;
    // parse_special splits control tokens out of the text (user-defined added tokens are always split out,
    // as Hugging Face does for non-special added tokens).
    std::vector<int32_t> tokenize(const std::string &utf8_text, bool add_special, bool parse_special) const;
    // Raw bytes of one token (may be part of a UTF-8 character); control tokens -> "" unless special.
    std::string token_to_piece(int32_t id, bool special) const;
    // Raw bytes of the sequence (may be invalid UTF-8 if the ids are; unicode::sanitize_utf8 makes it valid).
    std::string detokenize(const std::vector<int32_t> &ids, bool special) const;
    // Valid UTF-8 text of the sequence, exactly as Hugging Face's decode gives it: invalid bytes become U+FFFD
    // (byte-level BPE: per maximal invalid subsequence; SPM: a run of <0xXX> tokens that is not valid UTF-8 becomes
    // one U+FFFD per byte, as the ByteFallback decoder does).
    std::string decode_text(const std::vector<int32_t> &ids, bool special) const;

    int32_t bos() const { return bos_; }
    int32_t eos() const { return eos_; }
    bool is_eog(int32_t id) const;
    bool add_bos() const { return add_bos_; }
    bool add_eos() const { return add_eos_; }
    bool add_space_prefix() const { return add_space_prefix_; }
    const std::string &chat_template() const { return chat_template_; }
    const std::string &token_text(int32_t id) const;
    TokenType token_type(int32_t id) const;
    int32_t token_id(const std::string &text) const;  // -1 if the vocabulary has no such token

private:
    Vocab() = default;
    void check_id(int32_t id) const;
    void build_bpe(const GgufFile &file);
    void build_spm();
    void build_specials();
    // Tokenizes text that holds no special token: normalization, pre-tokenization, then the model.
    void tokenize_fragment(const std::string &text, std::vector<int32_t> &out) const;
    void bpe_piece(const char *bytes, size_t n, std::vector<int32_t> &out) const;
    void bpe_merge(std::vector<int32_t> &symbols) const;
    void spm_fragment(const std::string &text, std::vector<int32_t> &out) const;

    Kind kind_ = Kind::bpe;
    PreTokenizer pre_ = PreTokenizer::gpt2;
    std::string pre_name_;
    bool nfc_ = false;
    bool ignore_merges_ = false;
    bool add_bos_ = false;
    bool add_eos_ = false;
    bool add_space_prefix_ = false;
    int32_t bos_ = -1, eos_ = -1, unk_ = -1;
    std::string chat_template_;

    std::vector<std::string> texts_;   // token text as stored in the GGUF
    std::vector<std::string> pieces_;  // the bytes each token stands for when detokenized
    std::vector<uint8_t> types_;
    std::vector<float> scores_;
    std::vector<uint8_t> eog_;
    std::unordered_map<std::string, int32_t> text_to_id_;

    // BPE: (left id << 32 | right id) -> (rank, merged id); the initial token of every byte.
    std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;
    int32_t byte_token_[256] = {};
    // SPM: byte fallback tokens <0xXX>, -1 when absent.
    int32_t byte_fallback_[256] = {};

    // Added tokens split out of the text before the model sees it, longest first within each first byte.
    struct Special {
        std::string text;
        int32_t id;
        bool control;  // only split out when parse_special
    };
    std::vector<Special> specials_;
    std::vector<uint32_t> specials_by_byte_[256];

    // Pieces seen before: most words of a text repeat, and BPE on them is the dominant cost.
    mutable std::mutex cache_mutex_;
    mutable std::unordered_map<std::string, std::vector<int32_t>> cache_;
};

// Joins token pieces for streaming output: never emits part of a UTF-8 character (an incomplete sequence is held
// back until it completes) and replaces bytes that can never become valid by U+FFFD as soon as that is certain.
class StreamDecoder {
public:
    StreamDecoder(const Vocab &vocab, bool special);
    std::string push(int32_t id);
    std::string flush();  // what is held back, invalid bytes replaced by U+FFFD

private:
    std::string emit(std::string text);

    const Vocab &vocab_;
    bool special_;
    bool first_ = true;
    std::string pending_;  // byte-level BPE: an incomplete UTF-8 sequence; SPM: a run of byte-fallback tokens
};

}  // namespace adadecode
