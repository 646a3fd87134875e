#include "gguf_file.h"

#include <sys/stat.h>

#include <limits>

#include "ggml.h"
#include "gguf_check.h"

namespace adadecode {

GgufFile::GgufFile(const std::string &path) : path_(path) {
    struct stat st {};
    if (stat(path.c_str(), &st) != 0) {
        throw Error("cannot open '" + path + "': no such file");
    }
    if (!S_ISREG(st.st_mode)) {
        throw Error("'" + path + "' is not a regular file");
    }
    file_size_ = static_cast<uint64_t>(st.st_size);
    // ggml's reader rejects most corruption but says only "failed to load"; ours names the problem first.
    check_gguf_structure(path, file_size_);
    gguf_init_params params{};
    params.no_alloc = true;
    ggml_context *meta = nullptr;
    params.ctx = &meta;
    ctx_.reset(gguf_init_from_file(path.c_str(), params));
    meta_.reset(meta);
    if (!ctx_) {
        throw Error("'" + path + "' is not a valid GGUF file (header, metadata or tensor directory is corrupt)");
    }
    const size_t data_offset = gguf_get_data_offset(ctx_.get());
    const int64_t n_tensors = gguf_get_n_tensors(ctx_.get());
    tensors_.reserve(static_cast<size_t>(n_tensors));
    for (int64_t i = 0; i < n_tensors; ++i) {
        TensorInfo info{};
        info.name = gguf_get_tensor_name(ctx_.get(), i);
        info.type = gguf_get_tensor_type(ctx_.get(), i);
        const int64_t *ne = gguf_get_tensor_ne(ctx_.get(), i);
        for (int d = 0; d < 4; ++d) {
            info.ne[d] = ne[d];
        }
        info.nbytes = gguf_get_tensor_size(ctx_.get(), i);
        const size_t rel = gguf_get_tensor_offset(ctx_.get(), i);
        if (rel > std::numeric_limits<size_t>::max() - data_offset ||
            data_offset + rel > file_size_ || info.nbytes > file_size_ - (data_offset + rel)) {
            throw Error("'" + path + "' is truncated or corrupt: tensor '" + info.name + "' lies outside the file");
        }
        info.offset = data_offset + rel;
        tensors_.push_back(std::move(info));
    }
}

bool GgufFile::has(const std::string &key) const { return gguf_find_key(ctx_.get(), key.c_str()) >= 0; }

int64_t GgufFile::key_id(const std::string &key) const {
    const int64_t id = gguf_find_key(ctx_.get(), key.c_str());
    if (id < 0) {
        throw Error("'" + path_ + "': metadata key '" + key + "' is missing");
    }
    return id;
}

std::string GgufFile::get_string(const std::string &key) const {
    const int64_t id = key_id(key);
    if (gguf_get_kv_type(ctx_.get(), id) != GGUF_TYPE_STRING) {
        throw Error("'" + path_ + "': metadata key '" + key + "' is not a string");
    }
    return gguf_get_val_str(ctx_.get(), id);
}

std::string GgufFile::get_string(const std::string &key, const std::string &fallback) const {
    return has(key) ? get_string(key) : fallback;
}

static bool read_int(const gguf_context *ctx, int64_t id, gguf_type type, int64_t *out) {
    switch (type) {
        case GGUF_TYPE_UINT8: *out = gguf_get_val_u8(ctx, id); return true;
        case GGUF_TYPE_INT8: *out = gguf_get_val_i8(ctx, id); return true;
        case GGUF_TYPE_UINT16: *out = gguf_get_val_u16(ctx, id); return true;
        case GGUF_TYPE_INT16: *out = gguf_get_val_i16(ctx, id); return true;
        case GGUF_TYPE_UINT32: *out = gguf_get_val_u32(ctx, id); return true;
        case GGUF_TYPE_INT32: *out = gguf_get_val_i32(ctx, id); return true;
        case GGUF_TYPE_INT64: *out = gguf_get_val_i64(ctx, id); return true;
        case GGUF_TYPE_UINT64: {
            const uint64_t v = gguf_get_val_u64(ctx, id);
            if (v > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
                return false;
            }
            *out = static_cast<int64_t>(v);
            return true;
        }
        default: return false;
    }
}

int64_t GgufFile::get_int(const std::string &key) const {
    const int64_t id = key_id(key);
    int64_t v = 0;
    if (!read_int(ctx_.get(), id, gguf_get_kv_type(ctx_.get(), id), &v)) {
        throw Error("'" + path_ + "': metadata key '" + key + "' is not an integer in range");
    }
    return v;
}

int64_t GgufFile::get_int(const std::string &key, int64_t fallback) const { return has(key) ? get_int(key) : fallback; }

double GgufFile::get_float(const std::string &key) const {
    const int64_t id = key_id(key);
    switch (gguf_get_kv_type(ctx_.get(), id)) {
        case GGUF_TYPE_FLOAT32: return gguf_get_val_f32(ctx_.get(), id);
        case GGUF_TYPE_FLOAT64: return gguf_get_val_f64(ctx_.get(), id);
        default: return static_cast<double>(get_int(key));
    }
}

double GgufFile::get_float(const std::string &key, double fallback) const {
    return has(key) ? get_float(key) : fallback;
}

bool GgufFile::get_bool(const std::string &key, bool fallback) const {
    if (!has(key)) {
        return fallback;
    }
    const int64_t id = key_id(key);
    if (gguf_get_kv_type(ctx_.get(), id) == GGUF_TYPE_BOOL) {
        return gguf_get_val_bool(ctx_.get(), id);
    }
    return get_int(key) != 0;
}

size_t GgufFile::get_array_size(const std::string &key) const {
    const int64_t id = gguf_find_key(ctx_.get(), key.c_str());
    if (id < 0 || gguf_get_kv_type(ctx_.get(), id) != GGUF_TYPE_ARRAY) {
        return 0;
    }
    return gguf_get_arr_n(ctx_.get(), id);
}

std::vector<std::string> GgufFile::get_string_array(const std::string &key) const {
    const int64_t id = key_id(key);
    if (gguf_get_kv_type(ctx_.get(), id) != GGUF_TYPE_ARRAY || gguf_get_arr_type(ctx_.get(), id) != GGUF_TYPE_STRING) {
        throw Error("'" + path_ + "': metadata key '" + key + "' is not an array of strings");
    }
    const size_t n = gguf_get_arr_n(ctx_.get(), id);
    std::vector<std::string> out;
    out.reserve(n);
    for (size_t i = 0; i < n; ++i) {
        out.emplace_back(gguf_get_arr_str(ctx_.get(), id, i));
    }
    return out;
}

// gguf_get_arr_data aborts on string arrays, so the element type is checked before the data is touched.
static bool scalar_int_type(gguf_type type) {
    switch (type) {
        case GGUF_TYPE_UINT8: case GGUF_TYPE_INT8: case GGUF_TYPE_UINT16: case GGUF_TYPE_INT16:
        case GGUF_TYPE_UINT32: case GGUF_TYPE_INT32: case GGUF_TYPE_UINT64: case GGUF_TYPE_INT64: return true;
        default: return false;
    }
}

template <typename T>
static void append_array(const void *data, size_t n, std::vector<int64_t> *out) {
    const T *p = static_cast<const T *>(data);
    for (size_t i = 0; i < n; ++i) {
        out->push_back(static_cast<int64_t>(p[i]));
    }
}

std::vector<int64_t> GgufFile::get_int_array(const std::string &key) const {
    const int64_t id = key_id(key);
    if (gguf_get_kv_type(ctx_.get(), id) != GGUF_TYPE_ARRAY) {
        throw Error("'" + path_ + "': metadata key '" + key + "' is not an array");
    }
    const gguf_type type = gguf_get_arr_type(ctx_.get(), id);
    if (!scalar_int_type(type)) {
        throw Error("'" + path_ + "': metadata key '" + key + "' is not an array of integers");
    }
    const size_t n = gguf_get_arr_n(ctx_.get(), id);
    std::vector<int64_t> out;
    out.reserve(n);
    const void *data = n ? gguf_get_arr_data(ctx_.get(), id) : nullptr;
    switch (type) {
        case GGUF_TYPE_UINT8: append_array<uint8_t>(data, n, &out); break;
        case GGUF_TYPE_INT8: append_array<int8_t>(data, n, &out); break;
        case GGUF_TYPE_UINT16: append_array<uint16_t>(data, n, &out); break;
        case GGUF_TYPE_INT16: append_array<int16_t>(data, n, &out); break;
        case GGUF_TYPE_UINT32: append_array<uint32_t>(data, n, &out); break;
        case GGUF_TYPE_INT32: append_array<int32_t>(data, n, &out); break;
        case GGUF_TYPE_INT64: append_array<int64_t>(data, n, &out); break;
        case GGUF_TYPE_UINT64: append_array<uint64_t>(data, n, &out); break;
        default: throw Error("'" + path_ + "': metadata key '" + key + "' is not an array of integers");
    }
    return out;
}

std::vector<float> GgufFile::get_float_array(const std::string &key) const {
    const int64_t id = key_id(key);
    if (gguf_get_kv_type(ctx_.get(), id) != GGUF_TYPE_ARRAY) {
        throw Error("'" + path_ + "': metadata key '" + key + "' is not an array");
    }
    const gguf_type type = gguf_get_arr_type(ctx_.get(), id);
    if (type != GGUF_TYPE_FLOAT32 && type != GGUF_TYPE_FLOAT64 && !scalar_int_type(type)) {
        throw Error("'" + path_ + "': metadata key '" + key + "' is not an array of numbers");
    }
    const size_t n = gguf_get_arr_n(ctx_.get(), id);
    std::vector<float> out(n);
    if (n == 0) {
        return out;
    }
    const void *data = gguf_get_arr_data(ctx_.get(), id);
    switch (type) {
        case GGUF_TYPE_FLOAT32:
            for (size_t i = 0; i < n; ++i) out[i] = static_cast<const float *>(data)[i];
            break;
        case GGUF_TYPE_FLOAT64:
            for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(static_cast<const double *>(data)[i]);
            break;
        default: {
            const std::vector<int64_t> ints = get_int_array(key);
            for (size_t i = 0; i < n; ++i) out[i] = static_cast<float>(ints[i]);
        }
    }
    return out;
}

const GgufFile::TensorInfo *GgufFile::find_tensor(const std::string &name) const {
    for (const TensorInfo &t : tensors_) {
        if (t.name == name) {
            return &t;
        }
    }
    return nullptr;
}

}  // namespace adadecode
