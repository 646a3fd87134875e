// Prompt states: the tokens a KV cache holds and their KV entries, as bytes in a self-checking binary format, so
// that a conversation or a long shared prompt can be saved and restored (llama-cpp-python's save_state/load_state).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace adadecode {

class GgufFile;
class KvCache;
struct HParams;

// Identifies a model's weights: file size, tensor directory and a sample of every tensor's bytes (a fine-tune shares
// the directory). Never 0.
uint64_t model_fingerprint(const GgufFile &file);

// `tokens` are the ones whose KV entries `cache` holds at positions 0, 1, ...
std::string save_prompt_state(const KvCache &cache, const HParams &hp, const std::vector<int32_t> &tokens,
                              uint64_t fingerprint);

// Checks everything first (magic, checksum, version, model fingerprint, n_ctx, KV layout, token ids, size) and
// throws an Error naming the problem; only then overwrites the cache. Returns the state's tokens.
std::vector<int32_t> load_prompt_state(const std::string &bytes, KvCache &cache, const HParams &hp,
                                       uint64_t fingerprint, const std::string &model_path);

}  // namespace adadecode
