// Structural validation of a GGUF file before ggml's reader sees it: every count, length, type, dimension and
// offset in the header, metadata and tensor directory is checked against the file's size, so a corrupt or
// hostile file is rejected with a message naming the exact problem instead of a vague "failed to load", a giant
// allocation or an assertion inside ggml. Nothing is kept: GgufFile parses the (then known-sane) file with ggml.
#pragma once

#include <cstdint>
#include <string>

namespace adadecode {

// Throws adadecode::Error("'<path>': <problem>") unless `path` (of `file_size` bytes) is a structurally sound
// GGUF v2/v3 file whose tensor data all lies inside the file.
void check_gguf_structure(const std::string &path, uint64_t file_size);

}  // namespace adadecode
