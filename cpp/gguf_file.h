// A read-only view of a GGUF file's metadata and tensor directory, with typed getters that fail with a clear
// message (key missing, wrong type) instead of asserting. Shared by the model, vocab and exit-head loaders.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "error.h"
#include "ggml-cpp.h"
#include "gguf.h"

namespace adadecode {

class GgufFile {
public:
    // Parses the header, metadata and tensor directory of `path` (no tensor data is read).
    explicit GgufFile(const std::string &path);
    GgufFile(const GgufFile &) = delete;
    GgufFile &operator=(const GgufFile &) = delete;

    const std::string &path() const { return path_; }
    const gguf_context *raw() const { return ctx_.get(); }
    // The ggml context holding one metadata-only tensor per GGUF tensor (data == nullptr).
    ggml_context *tensor_meta() const { return meta_.get(); }
    uint64_t file_size() const { return file_size_; }

    bool has(const std::string &key) const;
    std::string get_string(const std::string &key) const;
    std::string get_string(const std::string &key, const std::string &fallback) const;
    // Integer keys accept any GGUF integer type; the value must fit in 64 bits and be >= 0 for u64.
    int64_t get_int(const std::string &key) const;
    int64_t get_int(const std::string &key, int64_t fallback) const;
    double get_float(const std::string &key) const;
    double get_float(const std::string &key, double fallback) const;
    bool get_bool(const std::string &key, bool fallback) const;
    std::vector<std::string> get_string_array(const std::string &key) const;
    std::vector<int64_t> get_int_array(const std::string &key) const;
    std::vector<float> get_float_array(const std::string &key) const;
    size_t get_array_size(const std::string &key) const;  // 0 when the key is missing

    // Tensor directory: offset is relative to the start of the file (data section already added).
    struct TensorInfo {
        std::string name;
        ggml_type type;
        int64_t ne[4];
        size_t offset;
        size_t nbytes;
    };
    const std::vector<TensorInfo> &tensors() const { return tensors_; }
    const TensorInfo *find_tensor(const std::string &name) const;

private:
    int64_t key_id(const std::string &key) const;  // throws when missing

    std::string path_;
    ggml_context_ptr meta_;
    gguf_context_ptr ctx_;
    uint64_t file_size_ = 0;
    std::vector<TensorInfo> tensors_;
};

}  // namespace adadecode
