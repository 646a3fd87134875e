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
// A decode pass split into rows on a device builds about 16 more per extra row and layer.
size_t graph_size_for(int n_layer, int split_rows) {
    return std::max<size_t>(8192, (64 + 16 * static_cast<size_t>(split_rows - 1)) * n_layer + 1024);
}

// ggml's CUDA kernels for quantized weights (mmvq) keep each output's arithmetic the same for 1 to 4 rows and
// change it from 5; float weights change kernels from 2 rows. Rows are multiplied in groups no wider than this.
int64_t invariant_rows(const ggml_tensor *w) { return ggml_is_quantized(w->type) ? 4 : 1; }

int kv_positions(int pos_end, int n_alloc) {
    return std::min(n_alloc, (pos_end + KvCache::kv_block - 1) / KvCache::kv_block * KvCache::kv_block);
}
}  // namespace

Forward::Forward(const Model &model, KvCache &cache, int n_threads, bool own_matmul)
    : model_(model), cache_(cache), n_threads_(n_threads), own_matmul_(own_matmul) {
    if (n_threads <= 0 || n_threads > GGML_MAX_N_THREADS) {
        throw Error("n_threads must be between 1 and " + std::to_string(GGML_MAX_N_THREADS) + ", got " +
                    std::to_string(n_threads));
    }
    if (model.device()) {
        own_matmul_ = false;
        backend_ = ggml_backend_dev_init(model.device(), nullptr);
    } else {
        backend_ = ggml_backend_cpu_init();
    }
    if (!backend_) {
        throw Error(std::string("cannot initialise the ggml backend of ") +
                    (model.device() ? ggml_backend_dev_name(model.device()) : "the CPU"));
    }
    if (ggml_backend_is_cpu(backend_)) {
        // A persistent thread pool: ggml would otherwise start and join threads for every graph, and the
        // layer-parallel scheduler runs several small graphs per token.
        ggml_threadpool_params tp = ggml_threadpool_params_default(n_threads);
        threadpool_ = ggml_threadpool_new(&tp);
        ggml_backend_cpu_set_n_threads(backend_, n_threads);
        ggml_backend_cpu_set_threadpool(backend_, threadpool_);
    }
    allocator_ = ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend_));
    reserve_graph(graph_size_for(model.hparams().n_layer, 1));
}

Forward::~Forward() {
    ggml_gallocr_free(allocator_);
    ggml_backend_free(backend_);
    if (threadpool_) ggml_threadpool_free(threadpool_);
}

void Forward::reserve_graph(size_t n_nodes) {
    if (n_nodes <= graph_size_) return;
    graph_size_ = n_nodes;
    graph_memory_.resize(ggml_tensor_overhead() * graph_size_ + ggml_graph_overhead_custom(graph_size_, false));
}

ggml_tensor *Forward::matmul(ggml_context *ctx, ggml_tensor *w, ggml_tensor *x) const {
    if (own_matmul_ && !in_extra_buffer(w) && qmatmul_supports(w)) return qmatmul(ctx, w, x);
    const int64_t group = invariant_rows(w);
    if (!split_rows_ || x->ne[1] <= group) return mul_mat_batch_invariant(ctx, w, x);
    ggml_tensor *out = nullptr;
    for (int64_t r = 0; r < x->ne[1]; r += group) {
        const int64_t rows = std::min(group, x->ne[1] - r);
        ggml_tensor *part = ggml_mul_mat(ctx, w, ggml_view_2d(ctx, x, x->ne[0], rows, x->nb[1], r * x->nb[1]));
        out = out ? ggml_concat(ctx, out, part, 1) : part;
    }
    return out;
}

ggml_tensor *Forward::attention(ggml_context *ctx, int il, ggml_tensor *q, ggml_tensor *mask, int n_kv) const {
    const HParams &hp = model_.hparams();
    const int hd = hp.head_dim;
    ggml_tensor *k_cache = cache_.k(il);
    ggml_tensor *v_cache = cache_.v(il);
    ggml_tensor *keys = ggml_view_3d(ctx, k_cache, hd, n_kv, hp.n_head_kv, k_cache->nb[1], hd * k_cache->nb[0], 0);
    ggml_tensor *values =
        ggml_view_3d(ctx, v_cache, n_kv, hd, hp.n_head_kv, v_cache->nb[1], hd * v_cache->nb[1], 0);
    ggml_tensor *qp = ggml_permute(ctx, q, 0, 2, 1, 3);  // [hd, n_rows, n_head]
    ggml_tensor *kq = ggml_mul_mat(ctx, keys, qp);       // [n_kv, n_rows, n_head]
    kq = ggml_soft_max_ext(ctx, kq, mask, 1.0f / std::sqrt(static_cast<float>(hd)), 0.0f);
    ggml_tensor *kqv = ggml_mul_mat(ctx, values, kq);  // [hd, n_rows, n_head]
    return ggml_cont_2d(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3), hp.n_embd_q(), q->ne[2]);
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

    ggml_tensor *attn = nullptr;
    if (!split_rows_) {
        attn = attention(ctx, il, q, mask, n_kv);
    } else {
        // Each row attends over the positions a one-row pass at its position would: the kernels and their
        // partitioning depend on the number of positions.
        for (int r = 0; r < n_rows; ++r) {
            const int n_kv_row = kv_positions(pos0 + r + 1, cache_.n_alloc());
            ggml_tensor *q_row = ggml_view_3d(ctx, q, hd, hp.n_head, 1, q->nb[1], q->nb[2], r * q->nb[2]);
            ggml_tensor *mask_row = ggml_view_1d(ctx, mask, n_kv_row, r * mask->nb[1]);
            ggml_tensor *part = attention(ctx, il, q_row, mask_row, n_kv_row);
            attn = attn ? ggml_concat(ctx, attn, part, 1) : part;
        }
    }
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
    const int n_kv = kv_positions(req.pos0 + n, cache_.n_alloc());
    split_rows_ = model_.device() && !req.prompt && n > 1;
    reserve_graph(graph_size_for(hp.n_layer, split_rows_ ? n : 1));
    // A device gets the embedding rows from the host: ggml's GPU backends cannot gather rows of every quantized
    // type (CUDA has no K-quant get_rows), and the file is mapped anyway.
    const bool embed_on_host = model_.device() && req.layer_begin == 0 && req.tokens;
    if (req.layer_begin == 0 && req.tokens) {
        for (int i = 0; i < n; ++i) {
            if (req.tokens[i] < 0 || req.tokens[i] >= hp.n_vocab) {
                throw Error("invalid token id " + std::to_string(req.tokens[i]) + " (vocabulary size " +
                            std::to_string(hp.n_vocab) + ")");
            }
        }
    }
    const float *hidden = req.hidden;
    if (embed_on_host) {
        embeddings_.resize(static_cast<size_t>(n) * hp.n_embd);
        model_.embed(req.tokens, n, embeddings_.data());
        hidden = embeddings_.data();
    }

    ggml_init_params params{};
    params.mem_size = graph_memory_.size();
    params.mem_buffer = graph_memory_.data();
    params.no_alloc = true;
    ggml_context *ctx = ggml_init(params);
    ggml_cgraph *gf = ggml_new_graph_custom(ctx, graph_size_, false);

    ggml_tensor *tokens_in = nullptr, *hidden_in = nullptr, *x = nullptr;
    if (req.layer_begin == 0 && req.tokens && !embed_on_host) {
        tokens_in = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n);
        ggml_set_input(tokens_in);
        x = ggml_get_rows(ctx, model_.tok_embd, tokens_in);
    } else {
        if (!hidden) {
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
        ggml_backend_tensor_set(tokens_in, req.tokens, 0, n * sizeof(int32_t));
    }
    if (hidden_in) {
        ggml_backend_tensor_set(hidden_in, hidden, 0, static_cast<size_t>(n) * hp.n_embd * sizeof(float));
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
