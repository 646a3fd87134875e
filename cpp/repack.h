// Weights in ggml's CPU "extra" buffer types (the repack type re-lays quantized blocks out so that its kernels
// unpack a block once for several rows), and the one matmul that stays batch-invariant with them.
#pragma once

#include <utility>
#include <vector>

#include "ggml-backend.h"
#include "ggml.h"

namespace adadecode {

// For each weight that the CPU device can multiply from an extra buffer type, that type (the first that fits);
// weights it cannot are left out. Only type and shape are looked at: no data is read.
std::vector<std::pair<ggml_tensor *, ggml_backend_buffer_type_t>> choose_extra_buffer_types(
    const std::vector<ggml_tensor *> &weights);

// True when `t` lives in a buffer of one of the CPU extra buffer types.
bool in_extra_buffer(const ggml_tensor *t);

// w · x for x's rows, such that a row's result does not depend on how many rows x has. ggml's kernels for repacked
// weights take rows in groups of 4 and the rest one by one, with different rounding; x is padded to a multiple of 4
// rows for those weights so that every row goes through the group kernel.
ggml_tensor *mul_mat_batch_invariant(ggml_context *ctx, ggml_tensor *w, ggml_tensor *x);

}  // namespace adadecode
