// One backend buffer holding a list of tensors back to back: the weights of a split model's range, its KV cache, or
// repacked weights. ggml's own ggml_backend_alloc_ctx_tensors_from_buft places a whole context; these callers place
// a chosen subset of one.
#pragma once

#include <vector>

#include "ggml-backend.h"
#include "ggml-cpp.h"

namespace adadecode {

// The bytes a `buft` buffer needs for `tensors`, each at the type's alignment, with room to align the base.
size_t placement_bytes(ggml_backend_buffer_type_t buft, const std::vector<ggml_tensor *> &tensors);

// A new `buft` buffer of placement_bytes() with every tensor placed in it (their data still unset), or nullptr when
// the buffer cannot be allocated: the caller's error names what it was for.
ggml_backend_buffer_ptr place_tensors(ggml_backend_buffer_type_t buft, const std::vector<ggml_tensor *> &tensors);

}  // namespace adadecode
