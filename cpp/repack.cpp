#include "repack.h"

#include <algorithm>

#include "ggml-cpp.h"
#include "ggml-cpu.h"

namespace adadecode {

namespace {

constexpr int64_t rows_per_group = 4;

const std::vector<ggml_backend_buffer_type_t> &extra_buffer_types() {
    static const std::vector<ggml_backend_buffer_type_t> types = [] {
        std::vector<ggml_backend_buffer_type_t> out;
        ggml_backend_reg_t reg = ggml_backend_cpu_reg();
        auto get_extra = reinterpret_cast<ggml_backend_dev_get_extra_bufts_t>(
            ggml_backend_reg_get_proc_address(reg, "ggml_backend_dev_get_extra_bufts"));
        if (get_extra) {
            for (ggml_backend_buffer_type_t *p = get_extra(ggml_backend_reg_dev_get(reg, 0)); p && *p; ++p) {
                out.push_back(*p);
            }
        }
        return out;
    }();
    return types;
}

}  // namespace

std::vector<std::pair<ggml_tensor *, ggml_backend_buffer_type_t>> choose_extra_buffer_types(
    const std::vector<ggml_tensor *> &weights) {
    const std::vector<ggml_backend_buffer_type_t> &extras = extra_buffer_types();
    ggml_backend_dev_t dev = ggml_backend_reg_dev_get(ggml_backend_cpu_reg(), 0);
    // Empty buffers of each type: they only tell supports_op where the weight would live, as llama.cpp asks it.
    std::vector<ggml_backend_buffer_ptr> probes;
    for (ggml_backend_buffer_type_t t : extras) probes.emplace_back(ggml_backend_buft_alloc_buffer(t, 0));
    ggml_init_params params{};
    params.mem_size = 3 * ggml_tensor_overhead();
    params.no_alloc = true;
    std::vector<std::pair<ggml_tensor *, ggml_backend_buffer_type_t>> out;
    for (ggml_tensor *w : weights) {
        const ggml_context_ptr owner(ggml_init(params));
        ggml_context *ctx = owner.get();
        ggml_tensor *probe = ggml_new_tensor(ctx, w->type, 2, w->ne);
        ggml_tensor *op = ggml_mul_mat(ctx, probe, ggml_new_tensor_2d(ctx, GGML_TYPE_F32, w->ne[0], 1));
        for (size_t i = 0; i < extras.size(); ++i) {
            if (!probes[i]) continue;
            probe->buffer = probes[i].get();
            if (ggml_backend_dev_supports_op(dev, op)) {
                out.emplace_back(w, extras[i]);
                break;
            }
        }
        probe->buffer = nullptr;
    }
    return out;
}

bool in_extra_buffer(const ggml_tensor *t) {
    if (!t->buffer) return false;
    const std::vector<ggml_backend_buffer_type_t> &extras = extra_buffer_types();
    return std::find(extras.begin(), extras.end(), ggml_backend_buffer_get_type(t->buffer)) != extras.end();
}

ggml_tensor *mul_mat_batch_invariant(ggml_context *ctx, ggml_tensor *w, ggml_tensor *x) {
    const int64_t n = x->ne[1];
    if (n % rows_per_group == 0 || !in_extra_buffer(w)) {
        return ggml_mul_mat(ctx, w, x);
    }
    const int pad = static_cast<int>(rows_per_group - n % rows_per_group);
    ggml_tensor *y = ggml_mul_mat(ctx, w, ggml_pad(ctx, x, 0, pad, 0, 0));
    return ggml_view_2d(ctx, y, y->ne[0], n, y->nb[1], 0);
}

}  // namespace adadecode
