// Corrupt and hostile model / heads files give an adadecode::Error naming the problem, never a crash or an
// out-of-bounds read. Self-contained (a tiny llama written here through ggml's GGUF writer), so CI runs it under
// AddressSanitizer and UBSan on every build: the structural checks, the hyper-parameter and tensor checks and the
// clean-up paths of constructors that throw are all exercised, plus a few hundred random byte flips.
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "engine.h"
#include "gguf.h"
#include "heads.h"
#include "model.h"

#include "check.h"

using namespace adadecode;

namespace {

constexpr int n_layer = 2, n_embd = 32, n_head = 4, n_head_kv = 2, n_ff = 64, head_dim = n_embd / n_head;
constexpr int n_vocab = 3 + 256 + 4;

std::string g_dir;

std::string tmp_path(const std::string &name) { return g_dir + "/" + name; }

using Bytes = std::vector<uint8_t>;

Bytes read_file(const std::string &path) {
    std::ifstream f(path, std::ios::binary);
    return Bytes(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

std::string write_file(const std::string &path, const Bytes &bytes) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    f.write(reinterpret_cast<const char *>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return path;
}

struct TinyOptions {
    std::function<void(gguf_context *)> edit_meta;  // change metadata before writing
    std::string drop_tensor;                       // leave this tensor out
    std::string reshape_tensor;                    // give this tensor one extra row
    std::string retype_tensor;                     // store this tensor as `retype_to`
    ggml_type retype_to = GGML_TYPE_F16;
};

// A tiny llama with a sentencepiece vocabulary; random weights (the point is a file the engine loads and runs).
std::string write_tiny_model(const std::string &path, const TinyOptions &opt = {}) {
    gguf_context *g = gguf_init_empty();
    gguf_set_val_str(g, "general.architecture", "llama");
    gguf_set_val_u32(g, "llama.block_count", n_layer);
    gguf_set_val_u32(g, "llama.context_length", 256);
    gguf_set_val_u32(g, "llama.embedding_length", n_embd);
    gguf_set_val_u32(g, "llama.feed_forward_length", n_ff);
    gguf_set_val_u32(g, "llama.attention.head_count", n_head);
    gguf_set_val_u32(g, "llama.attention.head_count_kv", n_head_kv);
    gguf_set_val_f32(g, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    gguf_set_val_f32(g, "llama.rope.freq_base", 10000.0f);
    gguf_set_val_str(g, "tokenizer.ggml.model", "llama");
    std::vector<std::string> texts = {"<unk>", "<s>", "</s>"};
    std::vector<int32_t> types = {2, 3, 3};
    for (int b = 0; b < 256; ++b) {
        char buf[8];
        std::snprintf(buf, sizeof(buf), "<0x%02X>", b);
        texts.push_back(buf);
        types.push_back(6);
    }
    for (const char *w : {"\xE2\x96\x81the", "\xE2\x96\x81" "cat", "\xE2\x96\x81sat", "ing"}) {
        texts.push_back(w);
        types.push_back(1);
    }
    std::vector<const char *> ptrs;
    for (const std::string &t : texts) ptrs.push_back(t.c_str());
    gguf_set_arr_str(g, "tokenizer.ggml.tokens", ptrs.data(), ptrs.size());
    gguf_set_arr_data(g, "tokenizer.ggml.token_type", GGUF_TYPE_INT32, types.data(), types.size());
    gguf_set_val_u32(g, "tokenizer.ggml.bos_token_id", 1);
    gguf_set_val_u32(g, "tokenizer.ggml.eos_token_id", 2);
    if (opt.edit_meta) opt.edit_meta(g);

    ggml_init_params params{};
    params.mem_size = 64 * ggml_tensor_overhead() + (4 << 20);
    ggml_context *ctx = ggml_init(params);
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.0f, 0.2f);
    auto add = [&](const std::string &name, int64_t ne0, int64_t ne1) {
        if (name == opt.drop_tensor) return;
        if (name == opt.reshape_tensor) ne1 += 1;
        const ggml_type type = name == opt.retype_tensor ? opt.retype_to : GGML_TYPE_F32;
        ggml_tensor *t = ne1 == 0 ? ggml_new_tensor_1d(ctx, type, ne0) : ggml_new_tensor_2d(ctx, type, ne0, ne1);
        ggml_set_name(t, name.c_str());
        const int64_t n = ggml_nelements(t);
        if (type == GGML_TYPE_F32) {
            for (int64_t i = 0; i < n; ++i) static_cast<float *>(t->data)[i] = ne1 == 0 ? 1.0f : normal(rng);
        } else {
            std::memset(t->data, 0, ggml_nbytes(t));
        }
        gguf_add_tensor(g, t);
    };
    const int dkv = n_head_kv * head_dim;
    add("token_embd.weight", n_embd, n_vocab);
    add("output_norm.weight", n_embd, 0);
    for (int il = 0; il < n_layer; ++il) {
        const std::string p = "blk." + std::to_string(il) + ".";
        add(p + "attn_norm.weight", n_embd, 0);
        add(p + "attn_q.weight", n_embd, n_embd);
        add(p + "attn_k.weight", n_embd, dkv);
        add(p + "attn_v.weight", n_embd, dkv);
        add(p + "attn_output.weight", n_embd, n_embd);
        add(p + "ffn_norm.weight", n_embd, 0);
        add(p + "ffn_gate.weight", n_embd, n_ff);
        add(p + "ffn_up.weight", n_embd, n_ff);
        add(p + "ffn_down.weight", n_ff, n_embd);
    }
    gguf_write_to_file(g, path.c_str(), false);
    gguf_free(g);
    ggml_free(ctx);
    return path;
}

std::string write_heads(const std::string &path, int layers_in_model, int width, float fill) {
    gguf_context *g = gguf_init_empty();
    gguf_set_val_str(g, "general.architecture", "llama");
    gguf_set_val_str(g, "general.type", "adapter");
    gguf_set_val_str(g, "adapter.type", "exit_heads");
    gguf_set_val_u32(g, "exit_heads.block_count", layers_in_model);
    gguf_set_val_u32(g, "exit_heads.embedding_length", width);
    gguf_set_val_u32(g, "exit_heads.vocab_size", n_vocab);
    const int32_t layer = 1;
    gguf_set_arr_data(g, "exit_heads.layers", GGUF_TYPE_INT32, &layer, 1);
    ggml_init_params params{};
    params.mem_size = 4 * ggml_tensor_overhead() + sizeof(float) * width * width;
    ggml_context *ctx = ggml_init(params);
    ggml_tensor *t = ggml_new_tensor_2d(ctx, GGML_TYPE_F32, width, width);
    ggml_set_name(t, "exit.1.weight");
    for (int i = 0; i < width * width; ++i) static_cast<float *>(t->data)[i] = i % (width + 1) == 0 ? 1.0f : fill;
    gguf_add_tensor(g, t);
    gguf_write_to_file(g, path.c_str(), false);
    gguf_free(g);
    ggml_free(ctx);
    return path;
}

EngineOptions small_options() {
    EngineOptions o;
    o.n_ctx = 32;
    o.n_threads = 1;
    return o;
}

// Loading `path` (and then `heads`, when given) throws an Error mentioning `needle`.
bool rejects(const std::string &path, const std::string &needle, const std::string &heads = "") {
    try {
        Engine e(path, small_options());
        if (!heads.empty()) e.load_heads(heads);
    } catch (const Error &e) {
        if (std::string(e.what()).find(needle) != std::string::npos) return true;
        std::fprintf(stderr, "%s: error '%s' does not mention '%s'\n", path.c_str(), e.what(), needle.c_str());
        return false;
    }
    std::fprintf(stderr, "%s: loaded, expected an error mentioning '%s'\n", path.c_str(), needle.c_str());
    return false;
}

// Where tensor `name`'s directory entry starts (its length prefix) in a file written by the writer above.
size_t tensor_entry(const Bytes &file, const std::string &name) {
    for (size_t i = 8; i + name.size() < file.size(); ++i) {
        uint64_t len = 0;
        std::memcpy(&len, &file[i - 8], 8);
        if (len == name.size() && std::memcmp(&file[i], name.data(), name.size()) == 0) return i - 8;
    }
    return 0;
}

template <typename T>
Bytes patched(Bytes b, size_t pos, T value) {
    std::memcpy(&b[pos], &value, sizeof(T));
    return b;
}

}  // namespace

int main() {
    char dir_template[] = "/tmp/adadecode_test_corrupt_XXXXXX";
    if (!mkdtemp(dir_template)) {
        std::perror("mkdtemp");
        return 1;
    }
    g_dir = dir_template;
    const std::string good = write_tiny_model(tmp_path("good.gguf"));
    const Bytes base = read_file(good);

    // The intact file loads and generates; its heads load.
    {
        Engine e(good, small_options());
        DecodeOptions o;
        o.max_tokens = 4;
        const DecodeResult r = e.generate({1, 260, 261}, o, [](int32_t) { return true; });
        CHECK(r.tokens.size() + (r.finish_reason == "stop" ? 1 : 0) >= 1);
        e.load_heads(write_heads(tmp_path("heads.gguf"), n_layer, n_embd, 0.0f));
        CHECK(e.heads() != nullptr);
    }

    // Header corruption, caught by the structural check before ggml's reader sees the file.
    CHECK(rejects(write_file(tmp_path("empty.gguf"), {}), "empty or truncated"));
    CHECK(rejects(write_file(tmp_path("magic.gguf"), patched(base, 0, uint32_t{0x46554747 ^ 1})), "not a GGUF"));
    CHECK(rejects(write_file(tmp_path("v1.gguf"), patched(base, 4, uint32_t{1})), "unsupported GGUF version 1"));
    CHECK(rejects(write_file(tmp_path("swapped.gguf"), patched(base, 4, uint32_t{0x03000000})), "byte-swapped"));
    CHECK(rejects(write_file(tmp_path("ntensors.gguf"), patched(base, 8, int64_t{1} << 40)), "tensor count"));
    CHECK(rejects(write_file(tmp_path("nkv.gguf"), patched(base, 16, int64_t{-1})), "metadata count"));
    CHECK(rejects(write_file(tmp_path("keylen.gguf"), patched(base, 24, uint64_t{1} << 62)), "has length"));
    for (size_t keep : {size_t{3}, size_t{20}, size_t{100}, base.size() / 2, base.size() - 1}) {
        CHECK(rejects(write_file(tmp_path("cut.gguf"), Bytes(base.begin(), base.begin() + keep)), "truncated"));
    }
    const std::string q = "blk.0.attn_q.weight";
    const size_t entry = tensor_entry(base, q);
    CHECK(entry > 0);
    const size_t dims = entry + 8 + q.size() + 4, type = dims + 16, offset = type + 4;
    CHECK(rejects(write_file(tmp_path("ndims.gguf"), patched(base, dims - 4, uint32_t{7})), "dimensions"));
    CHECK(rejects(write_file(tmp_path("negdim.gguf"), patched(base, dims, int64_t{-32})), "negative dimension"));
    CHECK(rejects(write_file(tmp_path("hugedim.gguf"), patched(base, dims + 8, int64_t{1} << 62)), "large"));
    CHECK(rejects(write_file(tmp_path("type.gguf"), patched(base, type, uint32_t{99})), "invalid ggml type 99"));
    CHECK(rejects(write_file(tmp_path("deprecated.gguf"), patched(base, type, uint32_t{4})), "removed ggml type"));
    CHECK(rejects(write_file(tmp_path("offset.gguf"), patched(base, offset, uint64_t{4})), "data offset"));
    CHECK(rejects(write_file(tmp_path("offset2.gguf"), patched(base, offset, ~uint64_t{0} - 8)), "data offset"));
    Bytes dup = base;  // rename blk.0.attn_k.weight to blk.0.attn_q.weight's twin name
    const size_t k_entry = tensor_entry(base, "blk.0.attn_k.weight");
    std::memcpy(&dup[k_entry + 8], q.data(), q.size());
    CHECK(rejects(write_file(tmp_path("dup.gguf"), dup), "duplicate tensor 'blk.0.attn_q.weight'"));

    // Well-formed files that do not describe a model this engine can run.
    auto variant = [&](const std::string &name, const TinyOptions &o) { return write_tiny_model(tmp_path(name), o); };
    TinyOptions o;
    o.edit_meta = [](gguf_context *g) { gguf_set_val_f32(g, "llama.attention.layer_norm_rms_epsilon", NAN); };
    CHECK(rejects(variant("nan.gguf", o), "layer_norm_rms_epsilon"));
    o.edit_meta = [](gguf_context *g) { gguf_set_val_f32(g, "llama.rope.freq_base", -1.0f); };
    CHECK(rejects(variant("theta.gguf", o), "freq_base"));
    o.edit_meta = [](gguf_context *g) { gguf_set_val_u32(g, "llama.attention.head_count", 0); };
    CHECK(rejects(variant("heads0.gguf", o), "head_count"));
    o.edit_meta = [](gguf_context *g) { gguf_set_val_i32(g, "llama.block_count", -3); };
    CHECK(rejects(variant("layers.gguf", o), "block_count"));
    o.edit_meta = [](gguf_context *g) { gguf_set_val_u32(g, "llama.rope.dimension_count", 7); };
    CHECK(rejects(variant("ropeodd.gguf", o), "rope.dimension_count"));
    o.edit_meta = [](gguf_context *g) { gguf_remove_key(g, "llama.embedding_length"); };
    CHECK(rejects(variant("nokey.gguf", o), "embedding_length' is missing"));
    o.edit_meta = [](gguf_context *g) {
        const char *s[] = {"a", "b"};
        gguf_set_arr_str(g, "tokenizer.ggml.token_type", s, 2);  // ggml asserts when asked for string array data
    };
    CHECK(rejects(variant("types.gguf", o), "not an array of integers"));
    o.edit_meta = [](gguf_context *g) { gguf_set_val_u32(g, "general.alignment", 32); };
    Bytes aligned = read_file(variant("align.gguf", o));  // ggml's writer refuses a bad alignment: patch it in
    const std::string align_key = "general.alignment";
    for (size_t i = 0; i + align_key.size() + 8 < aligned.size(); ++i) {
        if (std::memcmp(&aligned[i], align_key.data(), align_key.size()) == 0) {
            aligned = patched(aligned, i + align_key.size() + 4, uint32_t{3});
            break;
        }
    }
    CHECK(rejects(write_file(tmp_path("align.gguf"), aligned), "general.alignment = 3 is not a power of 2"));
    o = {};
    o.drop_tensor = "blk.1.ffn_down.weight";
    CHECK(rejects(variant("missing.gguf", o), "required tensor 'blk.1.ffn_down.weight' is missing"));
    o = {};
    o.reshape_tensor = "blk.0.attn_k.weight";
    CHECK(rejects(variant("shape.gguf", o), "expected [32, 16, 1, 1]"));
    o = {};
    o.retype_tensor = "blk.0.ffn_norm.weight";
    CHECK(rejects(variant("normtype.gguf", o), "expected f32"));
    o.retype_tensor = "blk.0.attn_v.weight";
    o.retype_to = GGML_TYPE_I32;
    CHECK(rejects(variant("i32.gguf", o), "not a supported weight type"));

    // Heads files: for another model, with NaN weights, truncated.
    CHECK(rejects(good, "another model", write_heads(tmp_path("h-width.gguf"), n_layer, n_embd * 2, 0.0f)));
    CHECK(rejects(good, "another model", write_heads(tmp_path("h-depth.gguf"), n_layer + 1, n_embd, 0.0f)));
    CHECK(rejects(good, "NaN", write_heads(tmp_path("h-nan.gguf"), n_layer, n_embd, NAN)));
    const Bytes heads = read_file(tmp_path("heads.gguf"));
    CHECK(rejects(good, "truncated",
                  write_file(tmp_path("h-cut.gguf"), Bytes(heads.begin(), heads.end() - 100))));
    CHECK(rejects(good, "not an exit-heads adapter", good));

    // Random byte flips in the header: every file is rejected with a message or loads and runs.
    std::mt19937 rng(12345);
    int rejected = 0;
    const size_t header = tensor_entry(base, "blk.1.ffn_down.weight") + 64;
    for (int i = 0; i < 300; ++i) {
        Bytes b = base;
        const int flips = 1 + static_cast<int>(rng() % 8);
        for (int f = 0; f < flips; ++f) b[rng() % header] ^= static_cast<uint8_t>(1u << (rng() % 8));
        const std::string path = write_file(tmp_path("flip.gguf"), b);
        try {
            Engine e(path, small_options());
            DecodeOptions d;
            d.max_tokens = 2;
            e.generate({1, 2}, d, [](int32_t) { return true; });
        } catch (const Error &e) {
            CHECK(std::strlen(e.what()) > 0);
            ++rejected;
        }
    }
    CHECK(rejected > 150);

    std::string cmd = "rm -rf '" + g_dir + "'";
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", g_dir.c_str());
    if (g_failures) {
        std::fprintf(stderr, "%d check(s) failed\n", g_failures);
        return 1;
    }
    std::printf("test_corrupt: all checks passed (%d of 300 flipped files rejected)\n", rejected);
    return 0;
}
