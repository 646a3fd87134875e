#include "forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "error.h"
#include "ops/qmatmul.h"
#include "repack.h"

namespace adadecode {

namespace {
// Graph nodes and tensors per pass: a layer builds about 40, so size by depth (the fixed floor covers the extras).
size_t graph_size_for(int n_layer) { return std::max<size_t>(8192, 64 * static_cast<size_t>(n_layer) + 1024); }
}  // namespace

Forward::Forward(const Model &model, KvCache &cache, int n_threads, bool own_matmul)
    : model_(model), cache_(cache), n_threads_(n_threads), own_matmul_(own_matmul) {
    if (n_threads <= 0 || n_threads > GGML_MAX_N_THREADS) {
        throw Error("n_threads must be between 1 and " + std::to_string(GGML_MAX_N_THREADS) + ", got " +
                    std::to_string(n_threads));
    }
    backend_ = ggml_backend_cpu_init();
    if (!backend_) {
        throw Error("cannot initialise the ggml CPU backend");
    }
    // A persistent thread pool: ggml would otherwise start and join threads for every graph, and the
    // layer-parallel scheduler runs several small graphs per token.
    ggml_threadpool_params tp = ggml_threadpool_params_default(n_threads);
    threadpool_ = ggml_threadpool_new(&tp);
    ggml_backend_cpu_set_n_threads(backend_, n_threads);
    ggml_backend_cpu_set_threadpool(backend_, threadpool_);
    allocator_ = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend_));
    graph_size_ = graph_size_for(model.hparams().n_layer);
    graph_memory_.resize(ggml_tensor_overhead() * graph_size_ + ggml_graph_overhead_custom(graph_size_, false));
}

Forward::~Forward() {
    ggml_gallocr_free(allocator_);
    ggml_backend_free(backend_);
    ggml_threadpool_free(threadpool_);
}

ggml_tensor *Forward::matmul(ggml_context *ctx, ggml_tensor *w, ggml_tensor *x) const {
    if (own_matmul_ && !in_extra_buffer(w) && qmatmul_supports(w)) return qmatmul(ctx, w, x);
    return mul_mat_batch_invariant(ctx, w, x);
}

ggml_tensor *Forward::build_layer(ggml_context *ctx, ggml_cgraph *gf, int il, ggml_tensor *x, ggml_tensor *positions,
                                  ggml_tensor *mask, int pos0, int n_rows, int n_kv) {
    const HParams &hp = model_.hparams();
    const LayerWeights &w = model_.layers[il];
    const int hd = hp.head_dim;

    ggml_tensor *cur = ggml_mul(ctx, ggml_rms_norm(ctx, x, hp.rms_eps), w.attn_norm);
    ggml_tensor *q = matmul(ctx, w.wq, cur);
    ggml_tensor *k = matmul(ctx, w.wk, cur);
    ggml_tensor *v = matmul(ctx, w.wv, cur);
    if (w.bq) q = ggml_add(ctx, q, w.bq);
    if (w.bk) k = ggml_add(ctx, k, w.bk);
    if (w.bv) v = ggml_add(ctx, v, w.bv);
    q = ggml_reshape_3d(ctx, q, hd, hp.n_head, n_rows);
    k = ggml_reshape_3d(ctx, k, hd, hp.n_head_kv, n_rows);
    if (w.q_norm) q = ggml_mul(ctx, ggml_rms_norm(ctx, q, hp.rms_eps), w.q_norm);
    if (w.k_norm) k = ggml_mul(ctx, ggml_rms_norm(ctx, k, hp.rms_eps), w.k_norm);
    q = ggml_rope_ext(ctx, q, positions, model_.rope_freqs, hp.rope_n_dims, hp.rope_type, hp.rope_n_ctx_orig,
                      hp.rope_theta, hp.rope_freq_scale, hp.yarn_ext_factor, hp.yarn_attn_factor, hp.yarn_beta_fast,
                      hp.yarn_beta_slow);
    k = ggml_rope_ext(ctx, k, positions, model_.rope_freqs, hp.rope_n_dims, hp.rope_type, hp.rope_n_ctx_orig,
                      hp.rope_theta, hp.rope_freq_scale, hp.yarn_ext_factor, hp.yarn_attn_factor, hp.yarn_beta_fast,
                      hp.yarn_beta_slow);

    // Write this pass's K and V rows into the cache; the copies are expanded first so they run before the
    // attention below reads the cache.
    ggml_tensor *k_cache = cache_.k(il);
    ggml_tensor *v_cache = cache_.v(il);
    ggml_tensor *k_dst = ggml_view_2d(ctx, k_cache, hp.n_embd_kv(), n_rows, k_cache->nb[1], pos0 * k_cache->nb[1]);
    ggml_build_forward_expand(gf, ggml_cpy(ctx, ggml_reshape_2d(ctx, k, hp.n_embd_kv(), n_rows), k_dst));
    ggml_tensor *v_dst = ggml_view_2d(ctx, v_cache, n_rows, hp.n_embd_kv(), v_cache->nb[1], pos0 * v_cache->nb[0]);
    ggml_build_forward_expand(gf, ggml_cpy(ctx, ggml_transpose(ctx, v), v_dst));

    ggml_tensor *keys = ggml_view_3d(ctx, k_cache, hd, n_kv, hp.n_head_kv, k_cache->nb[1], hd * k_cache->nb[0], 0);
    ggml_tensor *values =
        ggml_view_3d(ctx, v_cache, n_kv, hd, hp.n_head_kv, v_cache->nb[1], hd * v_cache->nb[1], 0);
    ggml_tensor *qp = ggml_permute(ctx, q, 0, 2, 1, 3);         // [hd, n_rows, n_head]
    ggml_tensor *kq = ggml_mul_mat(ctx, keys, qp);              // [n_kv, n_rows, n_head]
    kq = ggml_soft_max_ext(ctx, kq, mask, 1.0f / std::sqrt(static_cast<float>(hd)), 0.0f);
    ggml_tensor *kqv = ggml_mul_mat(ctx, values, kq);           // [hd, n_rows, n_head]
    ggml_tensor *attn = ggml_cont_2d(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3), hp.n_embd_q(), n_rows);
    attn = matmul(ctx, w.wo, attn);
    if (w.bo) attn = ggml_add(ctx, attn, w.bo);
    x = ggml_add(ctx, x, attn);

    cur = ggml_mul(ctx, ggml_rms_norm(ctx, x, hp.rms_eps), w.ffn_norm);
    ggml_tensor *gate = ggml_silu(ctx, matmul(ctx, w.ffn_gate, cur));
    ggml_tensor *up = matmul(ctx, w.ffn_up, cur);
    return ggml_add(ctx, x, matmul(ctx, w.ffn_down, ggml_mul(ctx, gate, up)));
}

ggml_tensor *Forward::build_norm_output(ggml_context *ctx, ggml_tensor *x, ggml_tensor *out_matrix) {
    ggml_tensor *cur = ggml_mul(ctx, ggml_rms_norm(ctx, x, model_.hparams().rms_eps), model_.output_norm);
    return matmul(ctx, out_matrix, cur);
}

void Forward::run(const PassRequest &req, PassResult *out) {
    const HParams &hp = model_.hparams();
    const int n = req.n_rows;
    if (n <= 0 || req.layer_begin < 0 || req.layer_end > hp.n_layer || req.layer_begin > req.layer_end) {
        throw Error("internal: bad pass over layers [" + std::to_string(req.layer_begin) + ", " +
                    std::to_string(req.layer_end) + ") with " + std::to_string(n) + " rows");
    }
    if (req.pos0 < 0 || req.pos0 + n > cache_.n_ctx()) {
        throw Error("context overflow: positions up to " + std::to_string(req.pos0 + n) + " exceed the context of " +
                    std::to_string(cache_.n_ctx()));
    }
    for (int il = req.layer_begin; il < req.layer_end; ++il) {
        if (cache_.filled(il) < req.pos0) {
            throw Error("internal: layer " + std::to_string(il) + " KV holds " + std::to_string(cache_.filled(il)) +
                        " positions but a pass at position " + std::to_string(req.pos0) + " needs them all");
        }
    }
    if (req.logits != PassRequest::Logits::none && req.layer_end != hp.n_layer) {
        throw Error("internal: logits requested before the last layer");
    }
    const int n_kv = std::min(cache_.n_alloc(), (req.pos0 + n + KvCache::kv_block - 1) / KvCache::kv_block *
                                                     KvCache::kv_block);

    ggml_init_params params{};
    params.mem_size = graph_memory_.size();
    params.mem_buffer = graph_memory_.data();
    params.no_alloc = true;
    ggml_context *ctx = ggml_init(params);
    ggml_cgraph *gf = ggml_new_graph_custom(ctx, graph_size_, false);

    ggml_tensor *tokens_in = nullptr, *hidden_in = nullptr, *x = nullptr;
    if (req.layer_begin == 0 && req.tokens) {
        tokens_in = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n);
        ggml_set_input(tokens_in);
        x = ggml_get_rows(ctx, model_.tok_embd, tokens_in);
    } else {
        if (!req.hidden) {
            throw Error("internal: a pass from layer " + std::to_string(req.layer_begin) + " needs hidden states");
        }
        hidden_in = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, hp.n_embd, n);
        ggml_set_input(hidden_in);
        x = hidden_in;
    }
    ggml_tensor *positions = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n);
    ggml_set_input(positions);
    ggml_tensor *mask = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_kv, n);
    ggml_set_input(mask);

    std::vector<std::pair<int, ggml_tensor *>> captures;
    for (int il = req.layer_begin; il < req.layer_end; ++il) {
        x = build_layer(ctx, gf, il, x, positions, mask, req.pos0, n, n_kv);
        for (int c : req.capture_layers) {
            if (c == il + 1) {
                ggml_tensor *copy = ggml_cont(ctx, x);  // x itself may be overwritten by later layers
                ggml_set_output(copy);
                ggml_build_forward_expand(gf, copy);
                captures.emplace_back(c, copy);
            }
        }
    }
    ggml_tensor *hidden_out = nullptr, *logits = nullptr, *head_logits = nullptr;
    if (req.want_hidden || req.head) {
        hidden_out = x;
        ggml_set_output(hidden_out);
        ggml_build_forward_expand(gf, hidden_out);
    }
    ggml_tensor *last = n == 1 ? x : ggml_view_2d(ctx, x, hp.n_embd, 1, x->nb[1], (n - 1) * x->nb[1]);
    if (req.head) {
        ggml_tensor *h = ggml_mul_mat(ctx, req.head->transform, last);
        head_logits = build_norm_output(ctx, h, req.head->output_rows);
        ggml_set_output(head_logits);
        ggml_build_forward_expand(gf, head_logits);
    }
    if (req.logits != PassRequest::Logits::none) {
        logits = build_norm_output(ctx, req.logits == PassRequest::Logits::all ? x : last, model_.output);
        ggml_set_output(logits);
        ggml_build_forward_expand(gf, logits);
    }
    ggml_build_forward_expand(gf, x);

    if (!ggml_gallocr_alloc_graph(allocator_, gf)) {
        ggml_free(ctx);
        throw Error("cannot allocate compute memory for a pass over " + std::to_string(n) + " rows");
    }
    if (tokens_in) {
        for (int i = 0; i < n; ++i) {
            if (req.tokens[i] < 0 || req.tokens[i] >= hp.n_vocab) {
                ggml_free(ctx);
                throw Error("invalid token id " + std::to_string(req.tokens[i]) + " (vocabulary size " +
                            std::to_string(hp.n_vocab) + ")");
            }
        }
        ggml_backend_tensor_set(tokens_in, req.tokens, 0, n * sizeof(int32_t));
    }
    if (hidden_in) {
        ggml_backend_tensor_set(hidden_in, req.hidden, 0, static_cast<size_t>(n) * hp.n_embd * sizeof(float));
    }
    positions_.resize(n);
    for (int i = 0; i < n; ++i) positions_[i] = req.pos0 + i;
    ggml_backend_tensor_set(positions, positions_.data(), 0, n * sizeof(int32_t));
    mask_.assign(static_cast<size_t>(n_kv) * n, -std::numeric_limits<float>::infinity());
    for (int i = 0; i < n; ++i) {
        std::fill(mask_.begin() + static_cast<size_t>(i) * n_kv,
                  mask_.begin() + static_cast<size_t>(i) * n_kv + req.pos0 + i + 1, 0.0f);
    }
    ggml_backend_tensor_set(mask, mask_.data(), 0, mask_.size() * sizeof(float));

    const ggml_status status = ggml_backend_graph_compute(backend_, gf);
    if (status != GGML_STATUS_SUCCESS) {
        ggml_free(ctx);
        throw Error("ggml graph computation failed (status " + std::to_string(static_cast<int>(status)) + ")");
    }
    cache_.mark_filled(req.layer_begin, req.layer_end, req.pos0 + n);

    auto fetch = [](ggml_tensor *t, std::vector<float> *dst) {
        dst->resize(ggml_nelements(t));
        ggml_backend_tensor_get(t, dst->data(), 0, ggml_nbytes(t));
    };
    if (hidden_out) fetch(hidden_out, &out->hidden);
    out->captured.assign(req.capture_layers.size(), {});
    for (size_t i = 0; i < req.capture_layers.size(); ++i) {
        for (const auto &[layer, tensor] : captures) {
            if (layer == req.capture_layers[i]) fetch(tensor, &out->captured[i]);
        }
    }
    if (logits) fetch(logits, &out->logits);
    if (head_logits) fetch(head_logits, &out->head_logits);
    ggml_free(ctx);
}

}  // namespace adadecode
