#include "buffer_placement.h"

#include <string>

#include "error.h"
#include "ggml-alloc.h"

namespace adadecode {

size_t placement_bytes(ggml_backend_buffer_type_t buft, const std::vector<ggml_tensor *> &tensors) {
    const size_t align = ggml_backend_buft_get_alignment(buft);
    size_t bytes = align;
    for (const ggml_tensor *t : tensors) bytes += GGML_PAD(ggml_backend_buft_get_alloc_size(buft, t), align);
    return bytes;
}

ggml_backend_buffer_ptr place_tensors(ggml_backend_buffer_type_t buft, const std::vector<ggml_tensor *> &tensors) {
    ggml_backend_buffer_ptr buffer(ggml_backend_buft_alloc_buffer(buft, placement_bytes(buft, tensors)));
    if (!buffer) return buffer;
    ggml_tallocr alloc = ggml_tallocr_new(buffer.get());
    for (ggml_tensor *t : tensors) {
        if (ggml_tallocr_alloc(&alloc, t) != GGML_STATUS_SUCCESS) {
            throw Error("tensor '" + std::string(t->name) + "' does not fit its " + ggml_backend_buft_name(buft) +
                        " buffer");
        }
    }
    return buffer;
}

}  // namespace adadecode
