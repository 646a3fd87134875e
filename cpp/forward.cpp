#include "forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "error.h"
#include "ops/attention.h"
#include "ops/qmatmul.h"
#include "repack.h"

namespace adadecode {

namespace {
// Graph nodes and tensors per pass: a layer builds about 40, plus a few per group of rows in a device's decode
// pass (`grouped_rows`), so size by depth and groups; the floor covers the extras.
size_t graph_size_for(int n_layers, int grouped_rows) {
    return 1024 + (64 + 12 * static_cast<size_t>(grouped_rows)) * static_cast<size_t>(n_layers);
}

// A device keeps one graph buffer and allocator per pass shape, at most this many: ggml's CUDA backend recognises
// a graph by the address of its first node and replays it as a CUDA graph when nothing in it changed since.
constexpr size_t max_graph_slots = 96;

// ggml's CUDA kernels for quantized weights (mmvq) keep each output's arithmetic the same for 1 to 4 rows and
// change it from 5; float weights change kernels from 2 rows. Rows are multiplied in groups no wider than this.
int64_t invariant_rows(const ggml_tensor *w) { return ggml_is_quantized(w->type) ? 4 : 1; }

// ggml's CUDA kernel for float vectors (mmvf) computes each output column in the same order for 1 to 3 columns (the
// block size follows the row length alone; every column has its own accumulator and reduction), and takes f32
// products of up to 3 columns on Ampere and newer. So up to 3 rows can share one attention product, where a row
// each costs a block per key position, head and row (+26 % of a whole 8B pass for a second row on an H200).
constexpr int64_t cuda_attention_rows = 3;

int64_t attention_rows_per_product(ggml_backend_dev_t device, ggml_type kv_type) {
    if (!device || kv_type != GGML_TYPE_F32) return 1;
    ggml_backend_reg_t reg = ggml_backend_dev_backend_reg(device);
    return reg && std::strcmp(ggml_backend_reg_name(reg), "CUDA") == 0 ? cuda_attention_rows : 1;
}

int kv_positions(int pos_end, int n_alloc) {
    return std::min(n_alloc, (pos_end + KvCache::kv_block - 1) / KvCache::kv_block * KvCache::kv_block);
}
}  // namespace

Forward::Forward(const Model &model, KvCache &cache, int n_threads, bool own_matmul, ggml_backend_dev_t device)
    : model_(model),
      cache_(cache),
      device_(device ? device : model.device()),
      n_threads_(n_threads),
      own_matmul_(own_matmul),
      threads_in_use_(n_threads) {
    if (n_threads <= 0 || n_threads > GGML_MAX_N_THREADS) {
        throw Error("n_threads must be between 1 and " + std::to_string(GGML_MAX_N_THREADS) + ", got " +
                    std::to_string(n_threads));
    }
    if (device_) {
        own_matmul_ = false;
        backend_.reset(ggml_backend_dev_init(device_, nullptr));
    } else {
        backend_.reset(ggml_backend_cpu_init());
    }
    if (!backend_) {
        throw Error(std::string("cannot initialise the ggml backend of ") +
                    (device_ ? ggml_backend_dev_name(device_) : "the CPU"));
    }
    attention_group_ = attention_rows_per_product(device_, cache_.k(0)->type);
    if (ggml_backend_is_cpu(backend_.get())) {
        // A persistent thread pool: ggml would otherwise start and join threads for every graph, and the
        // layer-parallel scheduler runs several small graphs per token.
        threadpools_.resize(n_threads);
        threads_in_use_ = 0;
        use_threads(n_threads);
    }
}

void Forward::use_threads(int n) {
    if (n < 1 || n > n_threads_) {
        throw Error("a pass runs on 1 to " + std::to_string(n_threads_) + " threads, not " + std::to_string(n));
    }
    if (n == threads_in_use_ || threadpools_.empty())
        return;
    // One pool per count rather than one pool running fewer of its threads: ggml wakes every thread of a pool for
    // each graph, and those outside the count would spin on the CPUs the count was lowered to leave alone.
    auto &pool = threadpools_[n - 1];
    if (!pool) {
        ggml_threadpool_params params = ggml_threadpool_params_default(n);
        pool.reset(ggml_threadpool_new(&params));
        if (!pool)
            throw Error("cannot start a pool of " + std::to_string(n) + " threads");
    }
    ggml_backend_cpu_set_n_threads(backend_.get(), n);
    ggml_backend_cpu_set_threadpool(backend_.get(), pool.get());  // pauses the pool it replaces
    threads_in_use_ = n;
}

void Forward::adapt_threads_to_load() {
    if (!threadpools_.empty() && !load_aware_)
        load_aware_ = std::make_unique<LoadAwareThreads>(n_threads_);
}

std::string Forward::structure_of(const PassRequest &req) {
    std::string key = std::to_string(req.layer_begin) + "," + std::to_string(req.layer_end) + "," +
                      std::to_string(req.n_rows) + "," + std::to_string(static_cast<int>(req.logits)) + "," +
                      std::to_string(reinterpret_cast<uintptr_t>(req.head)) + "," + std::to_string(req.want_hidden) +
                      "," + std::to_string(req.tokens != nullptr) + "," + std::to_string(req.prompt);
    for (int c : req.capture_layers) key += "," + std::to_string(c);
    return key;
}

Forward::GraphSlot &Forward::slot_for(const PassRequest &req, const std::string &structure) {
    // On the CPU one slot serves every pass; on a device, decode passes of one shape share a slot (so their graphs
    // are built at the same addresses every time) and prompt passes share another.
    const std::string key = !device_ ? "" : req.prompt ? "prompt" : structure;
    auto found = slots_.find(key);
    if (found == slots_.end()) {
        if (slots_.size() >= max_graph_slots) slots_.clear();
        found = slots_.emplace(key, GraphSlot{}).first;
        found->second.allocator.reset(ggml_gallocr_new(ggml_backend_get_default_buffer_type(backend_.get())));
    }
    GraphSlot &slot = found->second;
    const size_t n_nodes = graph_size_for(req.layer_end - req.layer_begin + 1, device_decode_ ? req.n_rows : 1);
    if (n_nodes > slot.n_nodes) {
        slot.n_nodes = n_nodes;
        slot.memory.resize(ggml_tensor_overhead() * n_nodes + ggml_graph_overhead_custom(n_nodes, false));
    }
    return slot;
}

TileShare *Forward::next_tile_share() const {
    if (!share_tiles_)
        return nullptr;
    if (tile_shares_used_ == tile_shares_.size())
        tile_shares_.emplace_back(n_threads_);
    return &tile_shares_[tile_shares_used_++];
}

bool Forward::ours(const ggml_tensor *w) const {
    return own_matmul_ && !in_extra_buffer(w) && qmatmul_supports(w);
}

ggml_tensor *Forward::matmul(ggml_context *ctx, ggml_tensor *w, ggml_tensor *x, ggml_tensor *packed) const {
    if (ours(w))
        return qmatmul(ctx, w, x, packed ? packed : model_.packed(w), next_tile_share());
    const int64_t group = invariant_rows(w);
    if (!device_decode_ || x->ne[1] <= group) return mul_mat_batch_invariant(ctx, w, x);
    ggml_tensor *out = nullptr;
    for (int64_t r = 0; r < x->ne[1]; r += group) {
        const int64_t rows = std::min(group, x->ne[1] - r);
        ggml_tensor *part = ggml_mul_mat(ctx, w, ggml_view_2d(ctx, x, x->ne[0], rows, x->nb[1], r * x->nb[1]));
        out = out ? ggml_concat(ctx, out, part, 1) : part;
    }
    return out;
}

std::vector<ggml_tensor *> Forward::matmuls(ggml_context *ctx, const std::vector<ggml_tensor *> &weights,
                                            ggml_tensor *x) const {
    std::vector<ggml_tensor *> out;
    const bool fused = ggml_nrows(x) == x->ne[1] &&
                       std::all_of(weights.begin(), weights.end(), [&](const ggml_tensor *w) { return ours(w); });
    if (!fused) {
        for (ggml_tensor *w : weights) out.push_back(matmul(ctx, w, x));
        return out;
    }
    std::vector<ggml_tensor *> packed;
    for (ggml_tensor *w : weights) packed.push_back(model_.packed(w));
    ggml_tensor *all = qmatmul_fused(ctx, weights, x, packed, next_tile_share());
    size_t column = 0;
    for (ggml_tensor *w : weights) {
        out.push_back(ggml_view_2d(ctx, all, w->ne[1], all->ne[1], all->nb[1], column));
        column += w->ne[1] * sizeof(float);
    }
    return out;
}

ggml_tensor *Forward::attention(ggml_context *ctx, int il, ggml_tensor *q, ggml_tensor *mask, int n_kv) const {
    const HParams &hp = model_.hparams();
    const int hd = hp.head_dim;
    const int64_t n_rows = q->ne[2];
    ggml_tensor *k_cache = cache_.k(il);
    ggml_tensor *v_cache = cache_.v(il);
    if (own_matmul_ && !device_decode_ && cpu_attention_supported(hd) && k_cache->type == GGML_TYPE_F16 &&
        v_cache->type == GGML_TYPE_F16 && mask->type == GGML_TYPE_F32 && ggml_is_contiguous(q)) {
        return cpu_attention(ctx, q, k_cache, v_cache, mask);
    }
    const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
    // The first `positions` of the cache as keys [hd, positions, n_head_kv] and values [positions, hd, n_head_kv].
    auto keys_over = [&](int positions) {
        return ggml_view_3d(ctx, k_cache, hd, positions, hp.n_head_kv, k_cache->nb[1], hd * k_cache->nb[0], 0);
    };
    auto values_over = [&](int positions) {
        return ggml_view_3d(ctx, v_cache, positions, hd, hp.n_head_kv, v_cache->nb[1], hd * v_cache->nb[1], 0);
    };
    if (device_decode_) {
        // A row attends over the cache positions its own position rounds up to (kv_positions), whichever pass
        // computes it, so its arithmetic is the same in a pass of one row or of eight; rows sharing that length
        // share the products (attention_rows_per_product). The graph changes once every kv_block positions.
        ggml_tensor *out = nullptr;
        for (const AttentionGroup &group : attention_groups_) {
            const int64_t r = group.first_row, g = group.rows;
            ggml_tensor *keys = keys_over(group.n_kv);
            ggml_tensor *values = values_over(group.n_kv);
            ggml_tensor *q_rows = ggml_view_3d(ctx, q, hd, hp.n_head, g, q->nb[1], q->nb[2], r * q->nb[2]);
            ggml_tensor *part = nullptr;
            if (attention_group_ == 1) {
                // Rows in the outermost dimension: every product has one query column whatever the number of rows.
                const size_t row_bytes = static_cast<size_t>(group.n_kv) * sizeof(float);
                ggml_tensor *mask_rows = ggml_view_4d(ctx, mask, group.n_kv, 1, 1, g, row_bytes, row_bytes, row_bytes,
                                                      group.mask_offset * sizeof(float));
                ggml_tensor *kq = ggml_mul_mat(ctx, keys, ggml_reshape_4d(ctx, q_rows, hd, 1, hp.n_head, g));
                kq = ggml_soft_max_ext(ctx, kq, mask_rows, scale, 0.0f);
                part = ggml_reshape_2d(ctx, ggml_mul_mat(ctx, values, kq), hp.n_embd_q(), g);
            } else {
                ggml_tensor *mask_rows = ggml_view_2d(ctx, mask, group.n_kv, g, group.n_kv * sizeof(float),
                                                      group.mask_offset * sizeof(float));
                ggml_tensor *kq = ggml_mul_mat(ctx, keys, ggml_permute(ctx, q_rows, 0, 2, 1, 3));  // [n_kv, g, n_head]
                kq = ggml_soft_max_ext(ctx, kq, mask_rows, scale, 0.0f);
                ggml_tensor *kqv = ggml_mul_mat(ctx, values, kq);  // [hd, g, n_head]
                part = g == 1 ? ggml_reshape_2d(ctx, kqv, hp.n_embd_q(), 1)
                              : ggml_cont_2d(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3), hp.n_embd_q(), g);
            }
            out = out ? ggml_concat(ctx, out, part, 1) : part;
        }
        return out;
    }
    ggml_tensor *qp = ggml_permute(ctx, q, 0, 2, 1, 3);  // [hd, n_rows, n_head]
    ggml_tensor *kq = ggml_mul_mat(ctx, keys_over(n_kv), qp);  // [n_kv, n_rows, n_head]
    kq = ggml_soft_max_ext(ctx, kq, mask, scale, 0.0f);
    ggml_tensor *kqv = ggml_mul_mat(ctx, values_over(n_kv), kq);  // [hd, n_rows, n_head]
    return ggml_cont_2d(ctx, ggml_permute(ctx, kqv, 0, 2, 1, 3), hp.n_embd_q(), n_rows);
}

ggml_tensor *Forward::build_layer(ggml_context *ctx, ggml_cgraph *gf, int il, ggml_tensor *x, ggml_tensor *positions,
                                  ggml_tensor *mask, int pos0, int n_rows, int n_kv) {
    const HParams &hp = model_.hparams();
    const LayerWeights &w = model_.layers[il];
    const int hd = hp.head_dim;

    ggml_tensor *cur = ggml_mul(ctx, ggml_rms_norm(ctx, x, hp.rms_eps), w.attn_norm);
    const std::vector<ggml_tensor *> qkv = matmuls(ctx, {w.wq, w.wk, w.wv}, cur);
    ggml_tensor *q = w.bq ? ggml_add(ctx, qkv[0], w.bq) : qkv[0];
    ggml_tensor *k = w.bk ? ggml_add(ctx, qkv[1], w.bk) : qkv[1];
    ggml_tensor *v = w.bv ? ggml_add(ctx, qkv[2], w.bv) : qkv[2];
    // A fused product's views are rows of a wider tensor: those split into heads in place (rope and the norms take
    // strides).
    auto heads = [&](ggml_tensor *t, int n_heads) {
        return ggml_is_contiguous(t) ? ggml_reshape_3d(ctx, t, hd, n_heads, n_rows)
                                     : ggml_view_3d(ctx, t, hd, n_heads, n_rows, hd * sizeof(float), t->nb[1], 0);
    };
    q = heads(q, hp.n_head);
    k = heads(k, hp.n_head_kv);
    if (w.q_norm) q = ggml_mul(ctx, ggml_rms_norm(ctx, q, hp.rms_eps), w.q_norm);
    if (w.k_norm) k = ggml_mul(ctx, ggml_rms_norm(ctx, k, hp.rms_eps), w.k_norm);
    q = ggml_rope_ext(ctx, q, positions, model_.rope_freqs, hp.rope_n_dims, hp.rope_type, hp.rope_n_ctx_orig,
                      hp.rope_theta, hp.rope_freq_scale, hp.yarn_ext_factor, hp.yarn_attn_factor, hp.yarn_beta_fast,
                      hp.yarn_beta_slow);
    k = ggml_rope_ext(ctx, k, positions, model_.rope_freqs, hp.rope_n_dims, hp.rope_type, hp.rope_n_ctx_orig,
                      hp.rope_theta, hp.rope_freq_scale, hp.yarn_ext_factor, hp.yarn_attn_factor, hp.yarn_beta_fast,
                      hp.yarn_beta_slow);

    // Write this pass's K and V rows into the cache; the writes are expanded first so they run before the
    // attention below reads the cache.
    ggml_tensor *k_cache = cache_.k(il);
    ggml_tensor *v_cache = cache_.v(il);
    ggml_tensor *k_rows = ggml_reshape_2d(ctx, k, hp.n_embd_kv(), n_rows);
    if (kv_rows_in_) {
        // On a device the destinations are index inputs, not views at a position: the graph stays the same from
        // token to token and ggml's CUDA backend can replay it.
        ggml_build_forward_expand(gf, ggml_set_rows(ctx, k_cache, k_rows, kv_rows_in_));
        ggml_tensor *v_elements = ggml_reshape_2d(ctx, v_cache, 1, ggml_nelements(v_cache));
        ggml_build_forward_expand(gf, ggml_set_rows(ctx, v_elements,
                                                    ggml_reshape_2d(ctx, ggml_is_contiguous(v) ? v : ggml_cont(ctx, v),
                                                                    1, hp.n_embd_kv() * n_rows),
                                                    v_index_in_));
    } else {
        ggml_tensor *k_dst = ggml_view_2d(ctx, k_cache, hp.n_embd_kv(), n_rows, k_cache->nb[1], pos0 * k_cache->nb[1]);
        ggml_build_forward_expand(gf, ggml_cpy(ctx, k_rows, k_dst));
        ggml_tensor *v_dst =
            ggml_view_2d(ctx, v_cache, n_rows, hp.n_embd_kv(), v_cache->nb[1], pos0 * v_cache->nb[0]);
        ggml_build_forward_expand(gf, ggml_cpy(ctx, ggml_transpose(ctx, v), v_dst));
    }
    ggml_tensor *attn = attention(ctx, il, q, mask, n_kv);
    attn = matmul(ctx, w.wo, attn);
    if (w.bo) attn = ggml_add(ctx, attn, w.bo);
    x = ggml_add(ctx, x, attn);

    cur = ggml_mul(ctx, ggml_rms_norm(ctx, x, hp.rms_eps), w.ffn_norm);
    // One gated op rather than silu then mul: the CPU computes the same values (silu(gate) * up, one vector pass),
    // and for a one-row pass the CUDA backend fuses the gate and up products and the gating into one kernel.
    const std::vector<ggml_tensor *> gate_up = matmuls(ctx, {w.ffn_gate, w.ffn_up}, cur);
    ggml_tensor *gated = ggml_swiglu_split(ctx, gate_up[0], gate_up[1]);
    return ggml_add(ctx, x, matmul(ctx, w.ffn_down, gated));
}

ggml_tensor *Forward::build_head_state(ggml_context *ctx, const HeadWeights &head, ggml_tensor *h) const {
    if (!head.w1)
        return device_ ? ggml_mul_mat(ctx, head.transform, h) : matmul(ctx, head.transform, h, head.packed_transform);
    // The two-layer head of python/adadecode/head_designs.py (TwoLayer): normalised before the nonlinearity, the
    // residual states having a few huge channels, and scaled back by the state's RMS. float16 weights through
    // ggml's own product (not converted to Q8_0 like the dense transform: R need not be a multiple of 32).
    constexpr float mlp_eps = 1e-6f;
    ggml_tensor *x = ggml_rms_norm(ctx, h, mlp_eps);
    ggml_tensor *inner = ggml_gelu_erf(ctx, ggml_mul_mat(ctx, head.w1, x));
    ggml_tensor *update = ggml_mul_mat(ctx, head.w2, inner);
    ggml_tensor *rms =
        ggml_sqrt(ctx, ggml_scale(ctx, ggml_sum_rows(ctx, ggml_sqr(ctx, h)), 1.0f / static_cast<float>(h->ne[0])));
    return ggml_add(ctx, h, ggml_mul(ctx, update, rms));
}

ggml_tensor *Forward::build_norm_output(ggml_context *ctx, ggml_tensor *x, ggml_tensor *out_matrix,
                                       ggml_tensor *packed) {
    ggml_tensor *cur = ggml_mul(ctx, ggml_rms_norm(ctx, x, model_.hparams().rms_eps), model_.output_norm);
    return matmul(ctx, out_matrix, cur, packed);
}

ModelDims Forward::dims() const {
    const HParams &hp = model_.hparams();
    const size_t pass_bytes = model_.pass_bytes();
    const double output_share = pass_bytes > 0 ? static_cast<double>(ggml_nbytes(model_.output)) / pass_bytes : 0.0;
    return ModelDims{hp.n_layer, hp.n_embd, hp.n_vocab, std::min(output_share, 1.0)};
}

void Forward::run(const PassRequest &req, PassResult *out) {
    run_traced(trace_, req, [&] { run_pass(req, out); });
}

void Forward::run_pass(const PassRequest &req, PassResult *out) {
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
    // A device's decode passes: each row attends over the positions its own position rounds up to (see
    // Forward::attention), in groups of rows; the mask input holds each group's rows at that length.
    device_decode_ = device_ && !req.prompt;
    // The pass's attention length; a device decode pass's rows each attend over their own (below).
    const int n_kv = kv_positions(req.pos0 + n, cache_.n_alloc());
    const std::string structure = structure_of(req);
    GraphSlot &slot = slot_for(req, structure);
    // The allocator's plan follows the graph, which also changes with the rows' attention lengths.
    std::string plan = structure;
    attention_groups_.clear();
    std::vector<int> row_kv(n, n_kv);  // positions each row's mask spans
    if (device_decode_) {
        size_t mask_offset = 0;
        for (int r = 0; r < n; ++r) {
            row_kv[r] = kv_positions(req.pos0 + r + 1, cache_.n_alloc());
            AttentionGroup *last = attention_groups_.empty() ? nullptr : &attention_groups_.back();
            if (last && last->n_kv == row_kv[r] && (attention_group_ == 1 || last->rows < attention_group_)) {
                ++last->rows;
            } else {
                attention_groups_.push_back({r, 1, row_kv[r], mask_offset});
                plan += ";" + std::to_string(row_kv[r]);
            }
            mask_offset += static_cast<size_t>(row_kv[r]);
        }
    }
    size_t mask_elements = 0;
    for (int kv : row_kv) mask_elements += static_cast<size_t>(kv);
    // A device gets the embedding rows from the host: ggml's GPU backends cannot gather rows of every quantized
    // type (CUDA has no K-quant get_rows), and the file is mapped anyway.
    const bool embed_on_host = device_ && req.layer_begin == 0 && req.tokens;
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
    params.mem_size = slot.memory.size();
    params.mem_buffer = slot.memory.data();
    params.no_alloc = true;
    const ggml_context_ptr graph_ctx(ggml_init(params));
    ggml_context *ctx = graph_ctx.get();
    ggml_cgraph *gf = ggml_new_graph_custom(ctx, slot.n_nodes, false);
    tile_shares_used_ = 0;  // the last graph has finished with them

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
    // A pass without layers (the exit head of a split model on the device holding the output, see SplitRunner)
    // has no positions, mask or KV writes: inputs outside the graph would get no memory.
    const bool has_layers = req.layer_end > req.layer_begin;
    ggml_tensor *positions = nullptr, *mask = nullptr;
    if (has_layers) {
        positions = ggml_new_tensor_1d(ctx, GGML_TYPE_I32, n);
        ggml_set_input(positions);
        mask = device_decode_ ? ggml_new_tensor_1d(ctx, GGML_TYPE_F32, static_cast<int64_t>(mask_elements))
                              : ggml_new_tensor_2d(ctx, GGML_TYPE_F32, n_kv, n);
        ggml_set_input(mask);
    }
    kv_rows_in_ = v_index_in_ = nullptr;
    if (device_ && has_layers) {
        kv_rows_in_ = ggml_new_tensor_1d(ctx, GGML_TYPE_I64, n);
        v_index_in_ = ggml_new_tensor_1d(ctx, GGML_TYPE_I64, static_cast<int64_t>(hp.n_embd_kv()) * n);
        ggml_set_input(kv_rows_in_);
        ggml_set_input(v_index_in_);
    }

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
        head_logits = build_norm_output(ctx, build_head_state(ctx, *req.head, last), req.head->output_rows,
                                        req.head->packed_output_rows);
        ggml_set_output(head_logits);
        ggml_build_forward_expand(gf, head_logits);
    }
    if (req.logits != PassRequest::Logits::none) {
        logits = build_norm_output(ctx, req.logits == PassRequest::Logits::all ? x : last, model_.output);
        ggml_set_output(logits);
        ggml_build_forward_expand(gf, logits);
    }
    ggml_build_forward_expand(gf, x);

    // ggml's allocator re-plans by itself only when node sizes outgrow the plan: it matches the graph's inputs to the
    // plan by position, so a graph of another structure with the same node and input counts would get another's
    // plan. Re-plan whenever the structure changes.
    if (slot.structure != plan) {
        if (!ggml_gallocr_reserve(slot.allocator.get(), gf)) {
            throw Error("cannot allocate compute memory for a pass over " + std::to_string(n) + " rows");
        }
        slot.structure = plan;
    }
    if (!ggml_gallocr_alloc_graph(slot.allocator.get(), gf)) {
        throw Error("cannot allocate compute memory for a pass over " + std::to_string(n) + " rows");
    }
    if (tokens_in) {
        ggml_backend_tensor_set(tokens_in, req.tokens, 0, n * sizeof(int32_t));
    }
    if (hidden_in) {
        ggml_backend_tensor_set(hidden_in, hidden, 0, static_cast<size_t>(n) * hp.n_embd * sizeof(float));
    }
    if (has_layers) {
        positions_.resize(n);
        for (int i = 0; i < n; ++i) positions_[i] = req.pos0 + i;
        ggml_backend_tensor_set(positions, positions_.data(), 0, n * sizeof(int32_t));
        mask_.assign(mask_elements, -std::numeric_limits<float>::infinity());
        auto row_begin = mask_.begin();
        for (int i = 0; i < n; ++i) {
            std::fill(row_begin, row_begin + req.pos0 + i + 1, 0.0f);
            row_begin += row_kv[i];
        }
        ggml_backend_tensor_set(mask, mask_.data(), 0, mask_.size() * sizeof(float));
    }
    if (kv_rows_in_) {
        // V is stored transposed ([position, channel] with positions fastest): element (e, row r) goes to
        // e * n_alloc + position.
        const int64_t n_embd_kv = hp.n_embd_kv();
        kv_index_.resize(static_cast<size_t>(n_embd_kv + 1) * n);
        for (int r = 0; r < n; ++r) {
            kv_index_[r] = req.pos0 + r;
            for (int64_t e = 0; e < n_embd_kv; ++e) {
                kv_index_[n + r * n_embd_kv + e] = e * cache_.n_alloc() + req.pos0 + r;
            }
        }
        ggml_backend_tensor_set(kv_rows_in_, kv_index_.data(), 0, n * sizeof(int64_t));
        ggml_backend_tensor_set(v_index_in_, kv_index_.data() + n, 0, n_embd_kv * n * sizeof(int64_t));
    }

    if (load_aware_)
        use_threads(load_aware_->threads_for_next_pass());
    const ggml_status status = ggml_backend_graph_compute(backend_.get(), gf);
    if (status != GGML_STATUS_SUCCESS) {
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
}

}  // namespace adadecode
